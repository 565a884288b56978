#!/bin/sh
# The long power-cut run (issue 17): the simulation of src/store/power_cuts.rs with many more cuts than `cargo test`
# makes, from seeds that start where the last run's left off unless given. It builds the test binary optimized (about
# 5x faster per cut than `cargo test`'s debug build) and runs one job per core, each on its own range of seeds (25 cuts
# a seed). Each failure prints its seed; replay one with NATTER_POWER_CUT_SEED=N cargo test --lib power_cuts.
#   scripts/power-cuts.sh [CUTS] [FIRST_SEED] [JOBS]      e.g. scripts/power-cuts.sh 1000000 1000 2
set -eu
cuts=${1:-1000000}
base=${2:-$(date +%s)}
jobs=${3:-$(nproc)}
cd "$(dirname "$0")/.."
# Optimized, without the release profile's whole-program LTO: the same speed per cut, minutes less to build.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
binary=$(cargo test --release --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))$/\1/p')
[ -x "$binary" ] || { echo "power-cuts: could not build the test binary" >&2; exit 1; }
seeds=$(( (cuts + 25 * jobs - 1) / (25 * jobs) ))
echo "power-cut long run: $cuts cuts from seed $base, $jobs jobs of $seeds seeds ($((seeds * 25)) cuts) each"
logs=target/power-cuts
mkdir -p $logs
pids=""
job=0
while [ $job -lt "$jobs" ]; do
    first=$((base + job * seeds))
    echo "job $job: seeds $first..$((first + seeds - 1)), log $logs/job-$job.log"
    NATTER_POWER_CUTS=$((seeds * 25)) NATTER_POWER_CUT_BASE=$first \
        "$binary" power_cuts_lose_nothing --nocapture >$logs/job-$job.log 2>&1 &
    pids="$pids $!"
    job=$((job + 1))
done
failed=0
job=0
for pid in $pids; do
    wait "$pid" || { failed=1; echo "job $job FAILED:"; }
    grep -E "^power cuts:|power-cut run|panicked" $logs/job-$job.log || tail -5 $logs/job-$job.log
    job=$((job + 1))
done
exit $failed
