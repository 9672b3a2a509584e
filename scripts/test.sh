#!/usr/bin/env bash
# Every test of paxosd: unit, storage, checker, simulation, integration with
# real processes, the quick-start smoke test, and a short chaos run with its
# broken-build counterpart. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
stage() {
    local name=$1
    shift
    echo "==> $name"
    local started=$SECONDS
    "$@"
    passed=$((passed + 1))
    echo "==> $name: ok ($((SECONDS - started)) s)"
}

stage "tools the network tests need (iptables)" scripts/install-test-tools.sh
stage "build (release)" cargo build --release --bins
stage "unit and integration tests" cargo test --all-targets -- --skip ci_sweep
# The simulator's sweep runs optimised: five times faster than a debug build.
stage "simulator: 500 seeds over 3 and 5 nodes and every kind of fault" cargo test --release --test sim
stage "a client whose node is cut off moves on (network namespace)" \
    cargo test --test partition -- --ignored
stage "model: the rejoin and membership change procedures are safe, their broken variants are not (stateright)" \
    cargo test --release --manifest-path model/Cargo.toml
stage "simulator: each planted bug is caught" cargo test --features planted-bugs --test sim_teeth
stage "quick-start smoke test" scripts/smoke.sh
stage "chaos: 5 nodes, fixed seed" scripts/chaos.sh --nodes 5 --duration 40 --seed 2026
stage "chaos: wiped data dirs and damaged logs, each followed by a rejoin, and membership changes" \
    scripts/chaos.sh --nodes 3 --duration 60 --seed 7 --disk-faults
stage "chaos: a broken build is caught" \
    scripts/chaos.sh --nodes 3 --duration 20 --seed 5 --broken ignore_accepted_state --expect-failure
echo "test.sh: $passed passed, 0 failed"
