#!/bin/sh
# The long power-cut run (issue 17): the simulation of src/store/power_cuts.rs with many more cuts than `cargo test`
# makes, from seeds that start where the last run's left off unless given, on a thread per core. It builds the test
# binary optimized, about 3x faster per cut than `cargo test`'s debug build. It prints its progress every 50,000 cuts;
# a failure prints its seed, and NATTER_POWER_CUT_SEED=N cargo test --lib power_cuts replays it.
#   scripts/power-cuts.sh [CUTS] [FIRST_SEED] [THREADS]      e.g. scripts/power-cuts.sh 1000000 1000000 2
set -eu
cuts=${1:-1000000}
base=${2:-$(date +%s)}
threads=${3:-$(nproc)}
cd "$(dirname "$0")/.."
# Optimized, without the release profile's whole-program LTO (the same speed per cut, minutes less to build), and with
# symbols, so that a run that hangs (it is reported after two minutes) can be looked at with gdb.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_STRIP=false
echo "power-cut long run: $cuts cuts from seed $base on $threads threads"
NATTER_POWER_CUTS=$cuts NATTER_POWER_CUT_BASE=$base NATTER_POWER_CUT_THREADS=$threads \
    exec cargo test --release --lib power_cuts_lose_nothing -- --nocapture
