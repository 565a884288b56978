#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20): the command decoder, the origin matcher, the session
# cookie parser and the push-subscription validator. Installs cargo-fuzz when missing. cargo-fuzz needs nightly
# features; RUSTC_BOOTSTRAP=1 lets the stable toolchain (the only one here) provide them.
set -euo pipefail
seconds="${1:-20}"
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "fuzzing $target for ${seconds}s"
  cargo fuzz run -O "$target" -- -max_total_time="$seconds" 2>&1 | grep -E '^Done|ERROR|panicked|SUMMARY' || true
  test "${PIPESTATUS[0]}" -eq 0
done
