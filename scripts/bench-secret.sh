#!/usr/bin/env bash
# What the cluster secret costs: two private 3-node clusters on loopback,
# one without a secret (ports 7501-7503) and one with (ports 7601-7603,
# every datagram sealed and checked, `secret_file`), under the same
# closed-loop `paxosctl bench` workloads. Each workload runs ROUNDS times on
# each cluster, alternating which goes first; a row shows the median of each
# side's rounds and their ratio (with / without), and the CPU time the three
# nodes spent per operation (user + system, from /proc), which the load of
# other processes on the machine moves far less than throughput. Only one
# cluster is under load at a time; the other idles.
#
#   scripts/bench-secret.sh
#   ROUNDS=3 SECONDS_PER_RUN=60 scripts/bench-secret.sh
#
#   ROUNDS           runs per workload and side (default 2)
#   SECONDS_PER_RUN  timed seconds of each run, after a 2 s warm-up (default 30)
#
# Runtime with the defaults: 3 workloads x 2 sides x 2 rounds x 32 s, about
# 6 min 30 s once built.
#
# Prints the machine, then one line per workload:
#   workload=put clients=256 plain_ops=N secret_ops=N ratio=X.XX plain_p50_ms=N secret_p50_ms=N
#     plain_p99_ms=N secret_p99_ms=N plain_node_cpu_us_per_op=N secret_node_cpu_us_per_op=N
#     cpu_ratio=X.XX plain_errors=N secret_errors=N
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench-secret: ROUNDS must be a positive integer" >&2; exit 2; }
[[ "$SECONDS_PER_RUN" =~ ^[1-9][0-9]*$ ]] || { echo "bench-secret: SECONDS_PER_RUN must be a positive integer" >&2; exit 2; }
WORKLOADS=("put 256" "read 64" "put 1")
PYTHON=$(command -v /usr/bin/python3 || command -v python3) || { echo "bench-secret: python3 is needed" >&2; exit 1; }

cargo build --release --quiet --bins
work=$(mktemp -d "${TMPDIR:-/tmp}/paxosd-bench-secret.XXXXXX")
cleanup() {
    for side in plain secret; do
        PAXOSD_CONFIG="$work/$side/paxosd.toml" PAXOSD_RUN_DIR="$work/$side" scripts/cluster.sh stop >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/plain/data" "$work/secret/data"
sed -e 's/127.0.0.1:71/127.0.0.1:75/' -e 's/^cluster_id = .*/cluster_id = 5005/' paxosd.toml >"$work/plain/paxosd.toml"
sed -e 's/127.0.0.1:71/127.0.0.1:76/' -e 's/^cluster_id = .*/cluster_id = 6006\nsecret_file = "secret.key"/' \
    paxosd.toml >"$work/secret/paxosd.toml"
target/release/paxosctl secret new "$work/secret/secret.key" >/dev/null
for side in plain secret; do
    PAXOSD_CONFIG="$work/$side/paxosd.toml" PAXOSD_RUN_DIR="$work/$side" scripts/cluster.sh start >/dev/null
done
target/release/paxosctl --config "$work/secret/paxosd.toml" status | grep -q 'secret=on' \
    || { echo "bench-secret: the sealed cluster does not say secret=on" >&2; exit 1; }

# CPU time (user + system, in clock ticks) the nodes of one side used so far.
node_ticks() {
    local side=$1 total=0 pid
    for id in 1 2 3; do
        pid=$(cat "$work/$side/node$id.pid")
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

run() {
    local side=$1 workload=$2 clients=$3 round=$4 before after
    before=$(node_ticks "$side")
    target/release/paxosctl --config "$work/$side/paxosd.toml" bench --workload "$workload" --clients "$clients" \
        --duration "$SECONDS_PER_RUN" --warmup 2 --json 2>>"$work/bench.err" | grep '^{' | tail -1 >"$work/run.json"
    after=$(node_ticks "$side")
    "$PYTHON" -c '
import json, os, sys
r = json.load(open(sys.argv[1]))
r["side"], r["round"] = sys.argv[2], int(sys.argv[3])
ticks = int(sys.argv[5]) - int(sys.argv[4])
# The warm-up ran too: spread its CPU over its operations at the timed rate.
ops = r["ops"] * (1 + 2 / r["elapsed_s"])
r["node_cpu_us_per_op"] = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(ops, 1)
print(json.dumps(r))
' "$work/run.json" "$side" "$round" "$before" "$after" >>"$work/raw.jsonl"
    echo "bench-secret: $workload $clients clients, round $round, $side: $(tail -1 "$work/raw.jsonl")" >&2
}

echo "machine: $(nproc) cores, $(uname -sr); $ROUNDS rounds of 2 + $SECONDS_PER_RUN s per workload and side"
for entry in "${WORKLOADS[@]}"; do
    read -r workload clients <<<"$entry"
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then order="plain secret"; else order="secret plain"; fi
        for side in $order; do run "$side" "$workload" "$clients" "$round"; done
    done
    "$PYTHON" - "$work/raw.jsonl" "$workload" "$clients" <<'EOF'
import json, statistics, sys
path, workload, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(path)]
rows = [r for r in rows if r["workload"] == workload and r["clients"] == clients]
med = lambda side, k: statistics.median(r[k] for r in rows if r["side"] == side)
plain, secret = med("plain", "ops_per_s"), med("secret", "ops_per_s")
cpu_plain, cpu_secret = med("plain", "node_cpu_us_per_op"), med("secret", "node_cpu_us_per_op")
print("workload=%s clients=%d plain_ops=%.0f secret_ops=%.0f ratio=%.2f plain_p50_ms=%.2f secret_p50_ms=%.2f "
      "plain_p99_ms=%.2f secret_p99_ms=%.2f plain_node_cpu_us_per_op=%.1f secret_node_cpu_us_per_op=%.1f "
      "cpu_ratio=%.2f plain_errors=%d secret_errors=%d" % (
    workload, clients, plain, secret, secret / plain if plain else float("nan"),
    med("plain", "p50_ms"), med("secret", "p50_ms"), med("plain", "p99_ms"), med("secret", "p99_ms"),
    cpu_plain, cpu_secret, cpu_secret / cpu_plain if cpu_plain else float("nan"),
    sum(r.get("errors", 0) for r in rows if r["side"] == "plain"),
    sum(r.get("errors", 0) for r in rows if r["side"] == "secret")))
EOF
done
