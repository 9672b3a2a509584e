#!/usr/bin/env bash
# The README's quick start, end to end, on a private copy of the cluster:
# scripts/cluster.sh start, propose and read through each node, kill a node,
# write while it is down, restart it, read through it; stop. Uses its own
# config (ports 7201-7203) and directory, so a cluster you run is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/paxosd-smoke.XXXXXX")
sed -e 's/127.0.0.1:71/127.0.0.1:72/' -e 's/^cluster_id = .*/cluster_id = 2002/' paxosd.toml >"$work/paxosd.toml"
mkdir -p "$work/data"
export PAXOSD_CONFIG="$work/paxosd.toml" PAXOSD_RUN_DIR="$work"
ctl() { target/release/paxosctl --config "$work/paxosd.toml" "$@"; }
cleanup() { scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "smoke: FAILED: $*" >&2; for f in "$work"/node*.log; do echo "== $f"; tail -n 20 "$f"; done >&2; exit 1; }

scripts/cluster.sh start
for n in 1 2 3; do
    [ "$(ctl --node "$n" propose greeting "hello-$n")" = "$n" ] || fail "propose through node $n"
    for r in 1 2 3; do
        [ "$(ctl --node "$r" read greeting)" = "hello-$n" ] || fail "read through node $r"
    done
done
scripts/cluster.sh kill 2
ctl propose while-down yes >/dev/null || fail "propose with node 2 down"
[ "$(ctl read while-down)" = yes ] || fail "read with node 2 down"
scripts/cluster.sh start 2
[ "$(ctl --node 2 read while-down)" = yes ] || fail "node 2 reads what was written while it was down"
scripts/cluster.sh kill 3
scripts/cluster.sh kill 1
set +e
ctl --timeout-ms 1000 propose k v 2>"$work/err"
code=$?
set -e
[ "$code" = 4 ] || fail "propose without quorum exited $code, expected 4"
# Node 2 alone never reached a majority, so it never sent an accept: it
# says so before the client's deadline, and the client can tell.
grep -q "no quorum within 1000 ms: the change was not applied" "$work/err" \
    || fail "no-quorum message: $(cat "$work/err")"
scripts/cluster.sh stop
echo "smoke: quick start works (start, propose/read via each node, kill, restart, no quorum)"
