#!/usr/bin/env bash
# Chaos test with real processes: a paxosd cluster in a network namespace of
# its own, a checked workload (paxosctl torture), and a nemesis that changes
# the faults every few seconds: partitions (isolate one, bisect, ring, bridge,
# one-way), datagram loss (1%, 10%, 30%), kill -9 and restart, SIGSTOP pauses
# (one node, a minority, a majority, all), and with --disk-faults a node's
# data dir wiped or a byte of its log flipped, then the node brought back
# with `paxosd --rejoin`. Lock sessions take, renew and release locks
# alongside (torture --lock-sessions). At the end everything is healed, the
# lists are read back, the history is checked for linearizability, and the
# locks for safety (no two holders at once, tokens strictly growing).
#
#   scripts/chaos.sh [--nodes 3|5] [--duration SECONDS] [--seed S]
#                    [--disk-faults] [--broken BUG] [--expect-failure]
#
#   --nodes       cluster size (default 5)
#   --duration    seconds of workload and faults (default 60)
#   --seed        seed of the fault schedule and the workload (default:
#                 random, printed); the same seed gives the same schedule
#   --disk-faults also wipe a node's data dir or flip a byte in the middle
#                 of its log (one node at a time): the node must refuse to
#                 start on the damaged log, naming --rejoin, and catch up
#                 with --rejoin before the next fault; and change the
#                 members: two more nodes start with --join, and
#                 `paxosctl member add|remove` grows and shrinks the
#                 cluster (three members or more) while torture runs
#   --broken BUG  run a deliberately broken build (cargo feature
#                 planted-bugs; BUG: ignore_accepted_state,
#                 accept_below_promise or vote_while_catching_up), to show
#                 that the check catches it
#   --expect-failure  exit 0 only if the check FAILS (for --broken runs)
#
# Prints the seed, the artifacts directory (history, node logs, fault log,
# timeline.svg) and one summary line. Exit 0 only if linearizable, no
# acknowledged write was lost and no lock was held twice at once; 1 if the
# check failed; 2 usage; 3 if it cannot run here (not root, no network
# namespaces, no iptables).
#
# Needs root (it creates a network namespace and firewall rules inside it:
# nothing outside the namespace is touched). Installs iptables if missing.
# Cleans up on every exit: its own processes by PID, then the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=5
DURATION=60
SEED=""
BROKEN=""
EXPECT_FAILURE=no
LOCK_SESSIONS=4
DISK_FAULTS=no
CLIENTS=8
KEYS=4

usage() { sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
cannot() { echo "chaos: cannot run: $*" >&2; exit 3; }

while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --seed) SEED=${2:?}; shift 2 ;;
        --broken) BROKEN=${2:?}; shift 2 ;;
        --disk-faults) DISK_FAULTS=yes; shift ;;
        --expect-failure) EXPECT_FAILURE=yes; shift ;;
        -h|--help) usage ;;
        *) echo "chaos: unknown option $1" >&2; usage ;;
    esac
done
[[ "$NODES" =~ ^(3|5)$ ]] || { echo "chaos: --nodes must be 3 or 5" >&2; exit 2; }
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 10 ] || { echo "chaos: --duration must be 10 or more seconds" >&2; exit 2; }
[ -n "$SEED" ] || SEED=$(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % 1000000 ))
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "chaos: --seed must be a number" >&2; exit 2; }
RANDOM=$SEED

# --- prerequisites -----------------------------------------------------------
[ "$(id -u)" = 0 ] || cannot "needs root for network namespaces and iptables"
command -v ip >/dev/null || cannot "no 'ip' command (iproute2)"
scripts/install-test-tools.sh || cannot "iptables is missing and could not be installed"

if [ -n "$BROKEN" ]; then
    TARGET=target/broken
    cargo build --release --quiet --bins --features planted-bugs --target-dir "$TARGET"
else
    TARGET=target
    cargo build --release --quiet --bins
fi
BIN=$TARGET/release

ART=$(mktemp -d "${TMPDIR:-/tmp}/paxosd-chaos-$SEED.XXXXXX")
NS=paxosd-chaos-$$
CFG=$ART/paxosd.toml
declare -a PIDS
HEALED_AT_EXIT=no

cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        kill -CONT "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    [ -n "${TORTURE_PID:-}" ] && kill -KILL "$TORTURE_PID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS" || cannot "cannot create network namespace (ip netns add)"
ip netns exec "$NS" ip link set lo up
in_ns() { ip netns exec "$NS" "$@"; }
in_ns iptables -N CHAOS || cannot "iptables does not work in the namespace"
in_ns iptables -A INPUT -j CHAOS

addr() { echo "127.0.0.$((10 + $1))"; }
# With --disk-faults, two more nodes join and leave by membership changes.
SLOTS=$NODES
[ "$DISK_FAULTS" = no ] || SLOTS=$((NODES + 2))
# The cluster runs with a secret, as it should anywhere but on a private
# loopback: every datagram of the run is sealed and checked.
"$BIN/paxosctl" secret new "$ART/secret.key" >/dev/null
{
    echo "cluster_id = $((SEED + 1))"
    echo 'secret_file = "secret.key"'
    echo "[client]"
    echo "timeout_ms = 1000"
    for i in $(seq 1 "$SLOTS"); do
        printf '[[node]]\nid = %d\naddress = "%s:7001"\ndata_dir = "data/node%d"\n' "$i" "$(addr "$i")" "$i"
        [ "$i" -le "$NODES" ] || echo "joins = true"
    done
} >"$CFG"
mkdir -p "$ART/data"

now_ms() { date +%s%3N; }
log() { echo "chaos: [$(( ($(now_ms) - START_MS) / 1000 ))s] $*"; }

start_node() {
    local i=$1 boot=${2:-}
    # `ip netns exec` execs the command, so $! is paxosd's own PID (not a
    # subshell's): kill -9 and SIGSTOP reach the node itself.
    ip netns exec "$NS" env PAXOSD_PLANTED_BUGS="$BROKEN" RUST_LOG=info \
        "$BIN/paxosd" --config "$CFG" --id "$i" $boot >>"$ART/node$i.log" 2>&1 &
    PIDS[$i]=$!
}

wait_answers() {
    local i=$1
    for _ in $(seq 1 100); do
        in_ns "$BIN/paxosctl" --config "$CFG" --node "$i" --timeout-ms 200 status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "node $i does not answer after restart"
}

# --- faults ------------------------------------------------------------------
# Fault functions run in this shell (never in $(...)), so the seeded RANDOM
# advances in one sequence and the same seed gives the same schedule. Each
# sets WHAT to a description.
block() { in_ns iptables -A CHAOS -s "$(addr "$1")" -d "$(addr "$2")" -j DROP; }
cut() { block "$1" "$2"; block "$2" "$1"; }
pick() { PICK=$(( RANDOM % $1 )); }

# Sets CHOSEN to N distinct node ids in a seeded random order.
choose_nodes() {
    local n=$1 i t
    CHOSEN=()
    for i in $(seq 1 "$NODES"); do CHOSEN+=("$i"); done
    for ((i = NODES - 1; i > 0; i--)); do
        pick $((i + 1)); t=${CHOSEN[$i]}; CHOSEN[$i]=${CHOSEN[$PICK]}; CHOSEN[$PICK]=$t
    done
    CHOSEN=("${CHOSEN[@]:0:$n}")
}

# How many nodes a kill or pause hits: one, a minority, a majority, or all.
fault_size() {
    local minority=$(( (NODES - 1) / 2 ))
    pick 4
    case $PICK in
        0) SIZE=1 ;;
        1) SIZE=$minority ;;
        2) SIZE=$(( minority + 1 )) ;;
        3) SIZE=$NODES ;;
    esac
}

partition() {
    local a b i d m=$(( NODES / 2 ))
    choose_nodes "$NODES"
    local order=("${CHOSEN[@]}")
    pick 5
    case $PICK in
        0)  for i in "${order[@]:1}"; do cut "${order[0]}" "$i"; done
            WHAT="isolate node ${order[0]}" ;;
        1)  for a in "${order[@]:0:$m}"; do for b in "${order[@]:$m}"; do cut "$a" "$b"; done; done
            WHAT="bisect {${order[*]:0:$m}} | {${order[*]:$m}}" ;;
        2)  # Ring: each node hears only its two neighbours in a shuffled ring.
            for ((a = 0; a < NODES; a++)); do for ((b = a + 1; b < NODES; b++)); do
                d=$(( b - a ))
                [ "$d" -eq 1 ] || [ "$d" -eq $((NODES - 1)) ] || cut "${order[$a]}" "${order[$b]}"
            done; done
            WHAT="ring ${order[*]}" ;;
        3)  # Bridge: two halves that only the middle node joins.
            for a in "${order[@]:0:$m}"; do for b in "${order[@]:$((m + 1))}"; do cut "$a" "$b"; done; done
            WHAT="bridge {${order[*]:0:$m}} -${order[$m]}- {${order[*]:$((m + 1))}}" ;;
        4)  for i in "${order[@]:1}"; do block "${order[0]}" "$i"; done
            WHAT="one-way: node ${order[0]} is not heard by the others" ;;
    esac
}

loss() {
    local p
    pick 3
    case $PICK in 0) p=0.01 ;; 1) p=0.10 ;; 2) p=0.30 ;; esac
    in_ns iptables -A CHAOS -m statistic --mode random --probability "$p" -j DROP
    WHAT="drop $p of all datagrams"
}

kill_nodes() {
    local i
    fault_size
    choose_nodes "$SIZE"
    KILLED="${CHOSEN[*]}"
    for i in $KILLED; do kill -KILL "${PIDS[$i]}" 2>/dev/null || true; wait "${PIDS[$i]}" 2>/dev/null || true; done
    WHAT="kill -9 nodes $KILLED"
}

pause_nodes() {
    local i
    fault_size
    choose_nodes "$SIZE"
    PAUSED="${CHOSEN[*]}"
    for i in $PAUSED; do kill -STOP "${PIDS[$i]}" 2>/dev/null || true; done
    WHAT="SIGSTOP nodes $PAUSED"
}

# A node loses its data dir, or a byte in the middle of its log goes bad.
disk_fault() {
    local i log size
    choose_nodes 1
    i=${CHOSEN[0]}
    kill -KILL "${PIDS[$i]}" 2>/dev/null || true; wait "${PIDS[$i]}" 2>/dev/null || true
    log=$ART/data/node$i/acceptor.log
    size=$(stat -c %s "$log" 2>/dev/null || echo 0)
    pick 2
    if [ "$PICK" = 0 ] || [ "$size" -lt 64 ]; then
        rm -rf "$ART/data/node$i"
        WHAT="wipe the data dir of node $i"
    else
        # A byte in the middle of the log: followed by valid units, so the
        # node must refuse to start rather than guess.
        local at=$(( size / 2 ))
        printf '\x5a' | dd of="$log" bs=1 seek="$at" conv=notrunc status=none
        WHAT="flip byte $at of node $i's log (of $size)"
    fi
    DAMAGED=$i
}

# Brings back the node of the last disk fault. A log damaged in the middle
# must be refused with a message naming --rejoin (a flip that landed in the
# last unit is instead dropped, and the node catches up on its own); then
# --rejoin, and the node must catch up before the next fault.
rejoin() {
    local i=$1 mark
    if [ -d "$ART/data/node$i" ]; then
        mark=$(stat -c %s "$ART/node$i.log" 2>/dev/null || echo 0)
        start_node "$i"
        for _ in $(seq 1 100); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            tail -c +$((mark + 1)) "$ART/node$i.log" | grep -q "damaged last unit" \
                || REFUSALS_MISSED=$((REFUSALS_MISSED + 1))
            wait_caught_up "$i"
            return 0
        fi
        wait "${PIDS[$i]}" 2>/dev/null || true
        tail -c +$((mark + 1)) "$ART/node$i.log" | grep -q -- "--rejoin" || REFUSALS_MISSED=$((REFUSALS_MISSED + 1))
    fi
    start_node "$i" --rejoin
    wait_caught_up "$i"
}

wait_caught_up() {
    local i=$1 line
    for _ in $(seq 1 300); do
        line=$(in_ns "$BIN/paxosctl" --config "$CFG" --node "$i" --timeout-ms 200 status 2>/dev/null | grep "^node $i " || true)
        # A node removed by a membership change catches up all the same.
        if grep -q "  up  \|  NOT A MEMBER  " <<<"$line"; then
            REJOINS=$((REJOINS + 1))
            log "node $i caught up: ${line%% in_flight*}"
            return 0
        fi
        sleep 0.1
    done
    log "node $i did not catch up within 30 s"
    STUCK=$((STUCK + 1))
}

# Adds a node that is not a member, or removes one (keeping three), by
# `paxosctl member` through any node.
member_change() {
    local members=() outside=() i out
    mapfile -t members < <(in_ns "$BIN/paxosctl" --config "$CFG" --timeout-ms 500 member list 2>/dev/null \
        | awk '/^  node [0-9]+  /{print $2}')
    for i in $(seq 1 "$SLOTS"); do [[ " ${members[*]} " == *" $i "* ]] || outside+=("$i"); done
    pick 2
    if [ "${#outside[@]}" -gt 0 ] && { [ "${#members[@]}" -le 3 ] || [ "$PICK" = 0 ]; }; then
        pick "${#outside[@]}"; i=${outside[$PICK]}
        set -- add "$i" "$(addr "$i"):7001"
    elif [ "${#members[@]}" -gt 3 ]; then
        pick "${#members[@]}"; i=${members[$PICK]}
        set -- remove "$i"
    else
        WHAT="no membership change possible (members: ${members[*]:-none answered})"; return 0
    fi
    if out=$(in_ns timeout 90 "$BIN/paxosctl" --config "$CFG" member "$@" 2>&1); then
        MEMBER_CHANGES=$((MEMBER_CHANGES + 1))
    else
        MEMBER_FAILURES=$((MEMBER_FAILURES + 1))
    fi
    WHAT="member $* (was ${members[*]}): $(tail -n 1 <<<"$out")"
}

heal() {
    local i
    in_ns iptables -F CHAOS
    for i in ${PAUSED:-}; do kill -CONT "${PIDS[$i]}" 2>/dev/null || true; done
    for i in ${KILLED:-}; do start_node "$i"; done
    for i in ${KILLED:-}; do wait_answers "$i"; done
    [ -z "${DAMAGED:-}" ] || rejoin "$DAMAGED"
    PAUSED=""; KILLED=""; DAMAGED=""
}

# --- the run -----------------------------------------------------------------
echo "chaos: seed=$SEED nodes=$NODES duration=${DURATION}s${BROKEN:+ broken=$BROKEN} artifacts=$ART"
START_MS=$(now_ms)
for i in $(seq 1 "$NODES"); do start_node "$i" --bootstrap; done
for i in $(seq $((NODES + 1)) "$SLOTS"); do start_node "$i" --join; done
for i in $(seq 1 "$SLOTS"); do wait_answers "$i"; done

ip netns exec "$NS" "$BIN/paxosctl" --config "$CFG" torture --clients "$CLIENTS" --keys "$KEYS" --duration "$DURATION" \
    --seed "$SEED" --history "$ART/history.jsonl" --lock-sessions "$LOCK_SESSIONS" \
    >"$ART/torture.out" 2>"$ART/torture.err" &
TORTURE_PID=$!

declare -A COUNT=([partition]=0 [loss]=0 [kill]=0 [pause]=0 [disk]=0 [member]=0)
KINDS=(partition loss kill pause)
[ "$DISK_FAULTS" = no ] || KINDS+=(disk member)
REJOINS=0; REFUSALS_MISSED=0; STUCK=0; MEMBER_CHANGES=0; MEMBER_FAILURES=0
# A seeded shuffle of the kinds, repeated: every kind comes up once in any
# run of that many consecutive faults.
for ((i = ${#KINDS[@]} - 1; i > 0; i--)); do pick $((i + 1)); t=${KINDS[$i]}; KINDS[$i]=${KINDS[$PICK]}; KINDS[$PICK]=$t; done
END_MS=$(( $(now_ms) + DURATION * 1000 ))
slot=0
sleep 1
while [ $(( $(now_ms) + 2500 )) -lt "$END_MS" ]; do
    kind=${KINDS[$(( slot % ${#KINDS[@]} ))]}
    slot=$((slot + 1))
    t0=$(now_ms)
    case $kind in
        partition) partition ;;
        loss) loss ;;
        kill) kill_nodes ;;
        pause) pause_nodes ;;
        disk) disk_fault ;;
        member) member_change ;;
    esac
    COUNT[$kind]=$(( COUNT[$kind] + 1 ))
    log "$kind: $WHAT"
    pick 3000
    hold=$(( 2000 + PICK ))
    left=$(( END_MS - $(now_ms) - 500 ))
    [ "$hold" -lt "$left" ] || hold=$left
    [ "$hold" -gt 0 ] && sleep "$(awk "BEGIN{print $hold/1000}")"
    heal
    echo "$t0 $(now_ms) $kind $WHAT" >>"$ART/faults.log"
    pick 1000
    sleep "$(awk "BEGIN{print (1000 + $PICK)/1000}")"
done
log "healed; waiting for the workload's final reads"
wait "$TORTURE_PID" || true
TORTURE_PID=""

summary=$(tail -n 1 "$ART/torture.out" || true)
in_ns "$BIN/paxosctl" timeline --history "$ART/history.jsonl" --faults "$ART/faults.log" \
    --out "$ART/timeline.svg" --title "chaos: nodes=$NODES seed=$SEED ${BROKEN:+broken=$BROKEN }$summary" || true
faults="partition:${COUNT[partition]},loss:${COUNT[loss]},kill:${COUNT[kill]},pause:${COUNT[pause]}"
[ "$DISK_FAULTS" = no ] || faults="$faults,disk:${COUNT[disk]},rejoined:$REJOINS,member_changes:$MEMBER_CHANGES,member_failures:$MEMBER_FAILURES"
ops=$(grep -o 'ops=[0-9]*' <<<"$summary" || echo "ops=0")
lin=$(grep -o 'linearizable=[a-z]*' <<<"$summary" || echo "linearizable=unknown")
lost=$(grep -o 'lost_acked=[0-9]*' <<<"$summary" || echo "lost_acked=unknown")
locks=$(grep -o 'lock_acquired=[0-9]* lock_released=[0-9]* lock_lost=[0-9]* lock_violations=[0-9]*' <<<"$summary" \
    || echo "lock_violations=unknown")
grep -h "NOT linearizable\|missing\|failed\|lock safety\|lock workload" "$ART/torture.err" | head -n 5 || true
echo "chaos: artifacts in $ART (history.jsonl, faults.log, node*.log, timeline.svg)"
echo "nodes=$NODES duration=$DURATION seed=$SEED faults=$faults $ops $lin $lost $locks"

passed=no
[ "$lin" = linearizable=yes ] && [ "$lost" = lost_acked=0 ] && [[ "$locks" == *" lock_violations=0" ]] && passed=yes
if [[ "$locks" == "lock_acquired=0 "* ]]; then
    echo "chaos: no lock was ever acquired: the lock workload checked nothing" >&2
    passed=no
fi
if [ "$STUCK" -gt 0 ] || [ "$REFUSALS_MISSED" -gt 0 ]; then
    echo "chaos: $STUCK rejoins did not catch up; $REFUSALS_MISSED damaged logs were not refused naming --rejoin" >&2
    passed=no
fi
if [ "$DISK_FAULTS" = yes ] && [ "${COUNT[member]}" -gt 0 ] && [ "$MEMBER_CHANGES" = 0 ]; then
    echo "chaos: no membership change succeeded (of ${COUNT[member]} asked; see faults.log)" >&2
    passed=no
fi
all_kinds=yes
for k in "${KINDS[@]}"; do [ "${COUNT[$k]}" -gt 0 ] || all_kinds=no; done
if [ "$EXPECT_FAILURE" = yes ]; then
    [ "$passed" = no ] && { echo "chaos: the broken build was caught, as expected"; exit 0; }
    echo "chaos: the broken build was NOT caught" >&2; exit 1
fi
[ "$all_kinds" = yes ] || echo "chaos: note: not every fault kind was injected (run longer)" >&2
[ "$passed" = yes ] || exit 1
