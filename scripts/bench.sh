#!/usr/bin/env bash
# Benchmarks, side by side in one run on one private 3-node cluster (ports
# 7301-7303): closed-loop puts with 1, 4 and 16 clients (group commit at
# work), reads, compare-and-sets, half reads and half puts, puts that all
# contend for one key, and the checker on a generated 100,000-operation
# history. Prints a table with each row's throughput as a ratio to the
# first row.
#
#   scripts/bench.sh [SECONDS_PER_ROW]      (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_ROW=${1:-10}
cargo build --release --quiet --bins
work=$(mktemp -d "${TMPDIR:-/tmp}/paxosd-bench.XXXXXX")
sed -e 's/127.0.0.1:71/127.0.0.1:73/' -e 's/^cluster_id = .*/cluster_id = 3003/' paxosd.toml >"$work/paxosd.toml"
mkdir -p "$work/data"
export PAXOSD_CONFIG="$work/paxosd.toml" PAXOSD_RUN_DIR="$work"
cleanup() { scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/cluster.sh start >/dev/null

echo "machine: $(nproc) cores, $(uname -sr); $SECONDS_PER_ROW s per row"
printf '%-34s %10s %8s %8s %8s %8s %7s\n' "workload" "ops/s" "p50 ms" "p99 ms" "p999 ms" "errors" "ratio"
first=""
row() {
    local label=$1 out ops
    shift
    # Only the summary line: the per-interval lines carry the same fields.
    out=$(target/release/paxosctl --config "$work/paxosd.toml" bench --duration "$SECONDS_PER_ROW" "$@" 2>>"$work/bench.err" | grep '^workload=')
    ops=$(grep -o 'ops_per_s=[0-9]*' <<<"$out" | cut -d= -f2)
    [ -n "$first" ] || first=$ops
    printf '%-34s %10s %8s %8s %8s %8s %7s\n' "$label" "$ops" \
        "$(grep -o 'p50_ms=[0-9.]*' <<<"$out" | cut -d= -f2)" \
        "$(grep -o 'p99_ms=[0-9.]*' <<<"$out" | cut -d= -f2)" \
        "$(grep -o 'p999_ms=[0-9.]*' <<<"$out" | cut -d= -f2)" \
        "$(grep -o 'errors=[0-9]*' <<<"$out" | cut -d= -f2)" \
        "$(awk "BEGIN{printf \"%.2f\", $ops/$first}")"
}
row "put, 1 client, 100 B"            --clients 1 --workload put
row "put, 4 clients, 100 B"           --clients 4 --workload put
row "put, 16 clients, 100 B"          --clients 16 --workload put
row "read, 16 clients"                --clients 16 --workload read
row "cas, 16 clients, 100 B"          --clients 16 --workload cas
row "mixed, 16 clients, 100 B"        --clients 16 --workload mixed
row "put, 16 clients, 16 KiB"         --clients 16 --workload put --value-bytes 16384
row "put, 16 clients, one hot key"    --clients 16 --workload contended
echo
echo "checker (cargo bench --bench checker):"
cargo bench --quiet --bench checker 2>/dev/null | grep '^checker'
