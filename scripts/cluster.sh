#!/usr/bin/env bash
# Runs the local cluster described by paxosd.toml (or $PAXOSD_CONFIG).
#
#   scripts/cluster.sh start            build (release) if needed, start every node
#   scripts/cluster.sh stop             stop every node (SIGTERM, then SIGKILL after 5 s)
#   scripts/cluster.sh status           which nodes run, and which answer
#   scripts/cluster.sh start N          start node N
#   scripts/cluster.sh stop N           stop node N cleanly
#   scripts/cluster.sh kill N           kill node N with SIGKILL (a crash)
#   scripts/cluster.sh rejoin N         start node N with --rejoin after its data
#                                       was lost or damaged, and wait (60 s at
#                                       most) until it has caught up
#   scripts/cluster.sh join N           start node N (joins = true in the config)
#                                       with --join; `paxosctl member add N ADDR`
#                                       then adds it
#
# Node N keeps its state in data/nodeN/ (data_dir in the config), its log in
# data/nodeN.log and its PID in data/nodeN.pid. Starting a running node does
# nothing; only PIDs recorded here are ever signalled, and only after checking
# that the process is still that node.
#
# A brand-new cluster (no node has a data dir yet) is started with
# --bootstrap (--join for nodes that say joins = true). A node whose data dir is missing while others have theirs is
# NOT bootstrapped: it refuses to start, naming `rejoin` (see "Replacing a
# node's data" in the README).
set -euo pipefail

cd "$(dirname "$0")/.."
CONFIG=${PAXOSD_CONFIG:-paxosd.toml}
BIN=target/release
RUN=${PAXOSD_RUN_DIR:-data}
mkdir -p "$RUN"

die() { echo "cluster.sh: $*" >&2; exit 1; }

node_ids() {
    # The id of every [[node]] table, in file order.
    awk '/^\[\[node\]\]/{in_node=1; next} /^\[/{in_node=0} in_node && /^[[:space:]]*id[[:space:]]*=/{gsub(/[^0-9]/,"",$0); print}' "$CONFIG"
}

data_dir_of() {
    awk -v want="$1" '/^\[\[node\]\]/{id=""; next} /^[[:space:]]*id[[:space:]]*=/{v=$0; gsub(/[^0-9]/,"",v); id=v}
        /^[[:space:]]*data_dir[[:space:]]*=/{ if (id==want) { v=$0; sub(/^[^=]*=[[:space:]]*"/,"",v); sub(/".*$/,"",v); print v } }' "$CONFIG"
}

build() {
    [ -f "$CONFIG" ] || die "no config $CONFIG"
    if ! cargo build --release --quiet --bins; then die "build failed"; fi
}

pid_of() {
    # Prints the PID of node $1 if the recorded process is alive and is that node.
    local pidfile="$RUN/node$1.pid" pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "paxosd .*--id $1\( \|$\)" || return 1
    echo "$pid"
}

cluster_is_new() {
    local id dir
    for id in $(node_ids); do
        dir=$(data_dir_of "$id")
        # Relative data dirs are relative to the config file.
        [[ "$dir" = /* ]] || dir="$(dirname "$CONFIG")/$dir"
        [ -e "$dir/identity" ] && return 1
    done
    return 0
}

joins() {
    # True when node $1 says joins = true.
    awk -v want="$1" '/^\[\[node\]\]/{id=""; next} /^[[:space:]]*id[[:space:]]*=/{v=$0; gsub(/[^0-9]/,"",v); id=v}
        /^[[:space:]]*joins[[:space:]]*=[[:space:]]*true/{ if (id==want) found=1 } END { exit !found }' "$CONFIG"
}

start_node() {
    local id=$1 bootstrap=$2 pid
    if pid=$(pid_of "$id"); then echo "node $id already running (pid $pid)"; return 0; fi
    local args=(--config "$CONFIG" --id "$id")
    if [ "$bootstrap" = yes ] && joins "$id"; then bootstrap=join; fi
    [ "$bootstrap" = yes ] && args+=(--bootstrap)
    [ "$bootstrap" = join ] && args+=(--join)
    [ "$bootstrap" = rejoin ] && args+=(--rejoin)
    nohup "$BIN/paxosd" "${args[@]}" >>"$RUN/node$id.log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN/node$id.pid"
    for _ in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "node $id failed to start; the end of $RUN/node$id.log:" >&2
            tail -n 5 "$RUN/node$id.log" >&2
            rm -f "$RUN/node$id.pid"
            return 1
        fi
        if "$BIN/paxosctl" --config "$CONFIG" --node "$id" --timeout-ms 200 status >/dev/null 2>&1; then
            echo "node $id started (pid $pid, log $RUN/node$id.log)"
            return 0
        fi
        sleep 0.1
    done
    echo "node $id started (pid $pid) but does not answer yet; see $RUN/node$id.log" >&2
}

signal_node() {
    local id=$1 sig=$2 pid
    if ! pid=$(pid_of "$id"); then echo "node $id is not running"; rm -f "$RUN/node$id.pid"; return 0; fi
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "node $id did not stop within 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/node$id.pid"
    if [ "$sig" = KILL ]; then echo "node $id killed (pid $pid)"; else echo "node $id stopped (pid $pid)"; fi
}

check_id() {
    node_ids | grep -qx "$1" || die "node $1 is not in $CONFIG (nodes: $(node_ids | tr '\n' ' '))"
}

cmd=${1:-}
node=${2:-}
case "$cmd" in
    start)
        build
        bootstrap=no
        cluster_is_new && bootstrap=yes
        if [ -n "$node" ]; then check_id "$node"; start_node "$node" "$bootstrap"; exit; fi
        failed=0
        for id in $(node_ids); do start_node "$id" "$bootstrap" || failed=1; done
        exit $failed
        ;;
    stop|kill)
        sig=TERM
        [ "$cmd" = kill ] && sig=KILL
        [ "$cmd" = kill ] && [ -z "$node" ] && die "usage: cluster.sh kill N"
        if [ -n "$node" ]; then check_id "$node"; signal_node "$node" "$sig"; exit; fi
        for id in $(node_ids); do signal_node "$id" "$sig"; done
        ;;
    rejoin)
        [ -n "$node" ] || die "usage: cluster.sh rejoin N"
        check_id "$node"
        build
        pid_of "$node" >/dev/null && die "node $node is running; stop it first"
        start_node "$node" rejoin || exit 1
        for _ in $(seq 1 600); do
            if "$BIN/paxosctl" --config "$CONFIG" --node "$node" --timeout-ms 200 status 2>/dev/null \
                | grep "^node $node " | grep -q "  up  "; then
                echo "node $node caught up"
                exit 0
            fi
            sleep 0.1
        done
        die "node $node has not caught up after 60 s (it needs a majority of the other nodes); see $RUN/node$node.log"
        ;;
    join)
        [ -n "$node" ] || die "usage: cluster.sh join N"
        check_id "$node"
        joins "$node" || die "node $node does not say joins = true in $CONFIG"
        build
        start_node "$node" join
        ;;
    status)
        for id in $(node_ids); do
            if pid=$(pid_of "$id"); then echo "node $id running (pid $pid)"; else echo "node $id not running"; fi
        done
        if [ -x "$BIN/paxosctl" ]; then "$BIN/paxosctl" --config "$CONFIG" --timeout-ms 500 status || true; fi
        ;;
    *)
        sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
        [ -z "$cmd" ] && exit 2
        die "unknown command: $cmd"
        ;;
esac
