#!/usr/bin/env bash
# The deterministic simulator over a range of seeds, on every core.
#
#   scripts/simulate.sh --seeds N [--first-seed S] [--jobs J] [--nodes 3|5]
#                       [--ops N]
#   scripts/simulate.sh --seed S        one seed, described in detail
#
# Runs seeds S..S+N (S random when not given, and printed). Every failing
# seed prints its first violation, where its history was written, and one
# line that reproduces it; the last line is always
#   seeds=N violations=V ops=O seeds_per_s=S
# and the exit status is 0 exactly when V is 0.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin paxos-sim
exec target/release/paxos-sim "$@"
