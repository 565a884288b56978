#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20): the WebSocket frame reader, the command decoder, the
# origin matcher, the session cookie parser, the push-subscription validator, and the decoders of the store's own
# files (a conversation record, a record of the log). Installs cargo-fuzz when missing.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain (the only one here) provide them.
set -euo pipefail
seconds="${1:-20}"
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "fuzzing $target for ${seconds}s"
  log="$(mktemp)"
  if ! cargo fuzz run -O "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done' "$log"
  rm -f "$log"
done
