#!/usr/bin/env bash
# Runs the browser and ActionCable tests against the natter binary (NATTER_BIN, default target/debug/natter).
# Installs what they need when it is missing: the npm packages (from package-lock.json) and Debian's Chromium.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is missing: install Debian's chromium package (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
fi

if [ ! -d "$here/node_modules" ]; then
  (cd "$here" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })
fi

# web/ is compiled into the binary, so build even when a binary exists: a stale one would test stale pages.
if [ -z "${NATTER_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet)
fi

cd "$root"
exec node --test --test-concurrency=1 tests/js/*.test.mjs
