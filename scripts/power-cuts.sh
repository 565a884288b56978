#!/bin/sh
# The long power-cut run (issue 17): the simulation of src/store/power_cuts.rs with many more cuts than `cargo test`
# makes, from seeds that start where the last run's left off unless given. Each failure prints its seed; replay one
# with NATTER_POWER_CUT_SEED=N cargo test --lib power_cuts.
#   scripts/power-cuts.sh [CUTS] [FIRST_SEED]      e.g. scripts/power-cuts.sh 1000000 1000
set -eu
cuts=${1:-1000000}
base=${2:-$(date +%s)}
echo "power-cut long run: $cuts cuts from seed $base"
NATTER_POWER_CUTS=$cuts NATTER_POWER_CUT_BASE=$base exec cargo test --lib power_cuts_lose_nothing -- --nocapture
