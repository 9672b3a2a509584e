#!/usr/bin/env bash
# Every test of paxosd: unit, storage, checker, simulation, integration with
# real processes, the quick-start smoke test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
stage() {
    local name=$1
    shift
    echo "==> $name"
    "$@"
    passed=$((passed + 1))
}

stage "build (release)" cargo build --release --bins
stage "unit and integration tests" cargo test --all-targets
stage "quick-start smoke test" scripts/smoke.sh
echo "test.sh: $passed passed, 0 failed"
