#!/usr/bin/env bash
# paxosd against etcd on this machine: a private 3-node paxosd cluster (ports
# 7401-7403) and a 3-member etcd cluster (client ports 23791-23793, peer ports
# 23801-23803, fsync on, every other setting etcd's default), both on
# loopback, under the same closed-loop workloads: `paxosctl bench` on one
# side, etcd-bench (etcd-bench/, the same workloads and figures over etcd's
# gRPC API) on the other. Each workload runs ROUNDS times on each side,
# alternating (paxosd first in odd rounds, etcd first in even ones), each run
# a 2 s warm-up and SECONDS_PER_RUN timed seconds; a row shows the median of
# each side's rounds.
#
#   scripts/bench-vs-etcd.sh
#   ROUNDS=3 SECONDS_PER_RUN=20 KEEP=1 scripts/bench-vs-etcd.sh
#
#   ROUNDS           runs per workload and side (default 2)
#   SECONDS_PER_RUN  timed seconds of each run (default 8)
#   KEEP=1           keep the work dir (data, logs, raw.jsonl: every run's
#                    JSON object) and print the path of raw.jsonl. The work
#                    dir is in $TMPDIR (or /tmp) and reaches about 0.5 GB:
#                    etcd preallocates 64 MB WAL files.
#   PAXOSD_FORMAT    json: `paxosctl bench ... --warmup 2 --json`; text: the
#                    older `paxosctl bench` line (write/read/contended only,
#                    no warm-up). Default: json if `paxosctl bench --help`
#                    mentions --json, text otherwise.
#   PAXOSCTL         the paxosctl that runs the load (default
#                    target/release/paxosctl; the cluster is always
#                    target/release's)
#
# Runtime with the defaults: 8 workloads x 2 sides x 2 rounds x (2 + 8 s),
# plus about 0.1 s per run and 2 s of start-up: 5 min 25 s once built
# (measured on 2 cores). Rebuilding paxosd after a change adds its compile
# time; the first run also installs etcd-server, protobuf-compiler and curl
# if missing (apt-get, needs root) and compiles etcd-bench (about 3 minutes
# on 2 cores).
#
# Prints the machine, then one line per workload:
#   workload=put clients=256 paxosd_ops=N etcd_ops=N ratio=X.XX paxosd_p99_ms=N.NN etcd_p99_ms=N.NN
#     paxosd_p50_ms=N.NN etcd_p50_ms=N.NN paxosd_errors=N etcd_errors=N
# (ops are ops/s; ratio = paxosd_ops / etcd_ops; n/a where a side gave no
# figures). Progress and each run's figures go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
KEEP=${KEEP:-0}
WARMUP_S=2
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-etcd: ROUNDS must be a positive integer" >&2; exit 2; }
[[ "$SECONDS_PER_RUN" =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-etcd: SECONDS_PER_RUN must be a positive integer" >&2; exit 2; }

# workload clients, in the issue's order.
WORKLOADS=("put 1" "put 16" "put 64" "put 256" "read 64" "cas 64" "mixed 64" "contended 16")
ETCD_CLIENT_PORTS=(23791 23792 23793)
ETCD_PEER_PORTS=(23801 23802 23803)
ETCD_ENDPOINTS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
ETCD_BENCH=etcd-bench/target/release/etcd-bench
PAXOSCTL=${PAXOSCTL:-target/release/paxosctl} # another paxosctl, to test this script

die() { echo "bench-vs-etcd: $*" >&2; exit 1; }
say() { echo "bench-vs-etcd: $*" >&2; }

# --- tools ------------------------------------------------------------------

apt_updated=no
apt_install() {
    [ "$(id -u)" = 0 ] || die "$1 is missing; install Debian's $1 (needs root)"
    if [ "$apt_updated" = no ]; then apt-get update -qq; apt_updated=yes; fi
    say "installing $1"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
# Debian's python3 first: a pyenv shim takes a third of a second to start.
PYTHON=$(command -v /usr/bin/python3 || command -v python3) || die "python3 is needed to read the JSON figures"
# Debian's etcd-server ships an init script and a systemd unit; on a machine
# that runs services this also starts a system etcd on 2379. It is not ours:
# we never use or stop it.
command -v etcd >/dev/null || apt_install etcd-server
# etcd-client (the crate) compiles etcd's .proto files in its build script.
command -v protoc >/dev/null || apt_install protobuf-compiler
# etcd's /health tells when the cluster has a leader.
command -v curl >/dev/null || apt_install curl

say "building paxosd and etcd-bench (release)"
cargo build --release --quiet --bins
cargo build --release --quiet --manifest-path etcd-bench/Cargo.toml
say "built after $SECONDS s"

# --- clusters and clean-up --------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/paxosd-vs-etcd.XXXXXX")
raw="$work/raw.jsonl"
etcd_pids=()
export PAXOSD_CONFIG="$work/paxosd.toml" PAXOSD_RUN_DIR="$work"

stop_etcd() {
    local pid
    for pid in "${etcd_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${etcd_pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    etcd_pids=()
}
cleanup() {
    trap - EXIT INT TERM
    if [ -f "$PAXOSD_CONFIG" ]; then scripts/cluster.sh stop >/dev/null 2>&1 || true; fi
    stop_etcd
    if [ "$KEEP" = 1 ]; then echo "raw JSON of every run: $raw"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_etcd() {
    local cluster="" i
    for i in 1 2 3; do cluster+="${cluster:+,}m$i=http://127.0.0.1:${ETCD_PEER_PORTS[i-1]}"; done
    for i in 1 2 3; do
        local client="http://127.0.0.1:${ETCD_CLIENT_PORTS[i-1]}" peer="http://127.0.0.1:${ETCD_PEER_PORTS[i-1]}"
        # Someone else's etcd on our ports would be measured instead of ours.
        if curl -fsS -m 1 "$client/health" >/dev/null 2>&1; then die "something already answers on $client"; fi
        mkdir -p "$work/etcd"
        etcd --name "m$i" --data-dir "$work/etcd/m$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-token "paxosd-vs-etcd-$$" \
            --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
            >"$work/etcd/m$i.log" 2>&1 &
        etcd_pids+=($!)
    done
    local healthy
    for _ in $(seq 1 300); do
        healthy=0
        for i in 1 2 3; do
            kill -0 "${etcd_pids[i-1]}" 2>/dev/null \
                || { tail -n 5 "$work/etcd/m$i.log" >&2; die "etcd member m$i exited"; }
            curl -fsS -m 1 "http://127.0.0.1:${ETCD_CLIENT_PORTS[i-1]}/health" 2>/dev/null \
                | grep -q '"health":"true"' && healthy=$((healthy + 1))
        done
        [ "$healthy" = 3 ] && return 0
        sleep 0.1
    done
    die "etcd is not healthy after 30 s; see $work/etcd/m*.log (KEEP=1 keeps them)"
}

start_paxosd() {
    sed -e 's/127.0.0.1:71/127.0.0.1:74/' -e 's/^cluster_id = .*/cluster_id = 4004/' paxosd.toml >"$PAXOSD_CONFIG"
    [ "$(grep -c '127.0.0.1:740[123]' "$PAXOSD_CONFIG")" = 3 ] || die "paxosd.toml no longer has nodes on 7101-7103"
    mkdir -p "$work/data"
    scripts/cluster.sh start >/dev/null
}

# --- one run ----------------------------------------------------------------

# Appends the last JSON object on stdin to raw.jsonl, with system and round
# added, and reports it on stderr; fails if there is none.
record() {
    "$PYTHON" -c '
import json, sys
import time
raw, system, round_, started = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
found = None
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        try: found = json.loads(line)
        except ValueError: pass
if not isinstance(found, dict):
    sys.exit(1)
r = {"system": system, "round": round_, **found}
with open(raw, "a") as f:
    f.write(json.dumps(r) + "\n")
cpu = " generator_cpu_s=%s" % r["generator_cpu_s"] if "generator_cpu_s" in r else ""
print("bench-vs-etcd: %s %s clients, round %d: %s ops_per_s=%.0f p99_ms=%.2f errors=%d%s wall_s=%.1f" % (
    r["workload"], r["clients"], round_, system, r["ops_per_s"], r["p99_ms"], r.get("errors", 0), cpu,
    time.time() - started), file=sys.stderr)
' "$raw" "$@"
}

# The older `paxosctl bench` summary line (workload=... ops_per_s=...
# p99_ms=...) as a JSON object named after our workload.
text_to_json() {
    "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    if line.startswith("workload="):
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        number = lambda v: float(v) if "." in v else int(v)
        out = {k: v if k == "workload" else number(v) for k, v in fields.items()}
        out["workload"] = sys.argv[1]
        print(json.dumps(out))
' "$1"
}

run_paxosd() {
    local workload=$1 clients=$2
    if [ "$PAXOSD_FORMAT" = json ]; then
        "$PAXOSCTL" --config "$PAXOSD_CONFIG" bench --workload "$workload" --clients "$clients" \
            --duration "$SECONDS_PER_RUN" --warmup "$WARMUP_S" --json 2>>"$work/paxosctl.err"
        return
    fi
    local old
    case $workload in
        put) old="write" ;;
        read | contended) old=$workload ;;
        *) return 1 ;; # cas and mixed came with the JSON form
    esac
    "$PAXOSCTL" --config "$PAXOSD_CONFIG" bench --workload "$old" --clients "$clients" \
        --duration "$SECONDS_PER_RUN" 2>>"$work/paxosctl.err" | text_to_json "$workload"
}

run_etcd() {
    "$ETCD_BENCH" --endpoints "$ETCD_ENDPOINTS" --workload "$1" --clients "$2" \
        --duration "$SECONDS_PER_RUN" --warmup "$WARMUP_S" --json 2>>"$work/etcd-bench.err"
}

# Runs one side once; appends its JSON to raw.jsonl, and reports it. A side
# that gives no figures leaves n/a in its row, and the comparison goes on.
run_side() {
    local system=$1 workload=$2 clients=$3 round=$4
    if ! "run_$system" "$workload" "$clients" | record "$system" "$round" "${EPOCHREALTIME/,/.}"; then
        say "$workload $clients clients, round $round: $system gave no figures (see $work/*.err)"
    fi
}

# The row of one workload: the median of each side's rounds in raw.jsonl.
row() {
    "$PYTHON" -c '
import json, statistics, sys
workload, clients = sys.argv[2], float(sys.argv[3])
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def median(system, field):
    xs = [r[field] for r in runs if r["system"] == system and r["workload"] == workload
          and float(r["clients"]) == clients and field in r]
    return statistics.median(xs) if xs else None
p_ops, e_ops = median("paxosd", "ops_per_s"), median("etcd", "ops_per_s")
p_p99, e_p99 = median("paxosd", "p99_ms"), median("etcd", "p99_ms")
p_p50, e_p50 = median("paxosd", "p50_ms"), median("etcd", "p50_ms")
def errors(system):
    return sum(r.get("errors", 0) for r in runs if r["system"] == system and r["workload"] == workload
               and float(r["clients"]) == clients)
num = lambda x, f: "n/a" if x is None else f % x
ratio = p_ops / e_ops if p_ops is not None and e_ops else None
print("workload=%s clients=%s paxosd_ops=%s etcd_ops=%s ratio=%s paxosd_p99_ms=%s etcd_p99_ms=%s"
      " paxosd_p50_ms=%s etcd_p50_ms=%s paxosd_errors=%d etcd_errors=%d" % (
    workload, sys.argv[3], num(p_ops, "%.0f"), num(e_ops, "%.0f"), num(ratio, "%.2f"),
    num(p_p99, "%.2f"), num(e_p99, "%.2f"), num(p_p50, "%.2f"), num(e_p50, "%.2f"),
    errors("paxosd"), errors("etcd")))
' "$raw" "$1" "$2"
}

# --- the comparison ---------------------------------------------------------

start_etcd
start_paxosd
touch "$raw"
if [ -z "${PAXOSD_FORMAT:-}" ]; then
    PAXOSD_FORMAT=text
    "$PAXOSCTL" bench --help 2>/dev/null | grep -q -- '--json' && PAXOSD_FORMAT=json
fi
case $PAXOSD_FORMAT in json | text) ;; *) die "PAXOSD_FORMAT must be json or text" ;; esac
say "paxosctl bench output: $PAXOSD_FORMAT"

etcd_version=$(etcd --version | sed -n 's/^etcd Version: //p')
# The load average shows whether something else shared the machine.
echo "machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg);" \
    "etcd $etcd_version; paxosd $(git rev-parse --short HEAD 2>/dev/null || echo '?');" \
    "$ROUNDS rounds of ${WARMUP_S}+${SECONDS_PER_RUN} s per side and workload, medians"
for entry in "${WORKLOADS[@]}"; do
    read -r workload clients <<<"$entry"
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then order=(paxosd etcd); else order=(etcd paxosd); fi
        for system in "${order[@]}"; do run_side "$system" "$workload" "$clients" "$round"; done
    done
    row "$workload" "$clients"
done
say "done in $SECONDS s"
