#!/usr/bin/env bash
# Builds natter as one statically linked x86_64 binary and checks that it is static and within its size budget.
#
#   scripts/static-build.sh            # build, check, print the path and the size
#   NATTER_SIZE_BUDGET_MB=15 scripts/static-build.sh
#
# Why 12 MB: the binary carries an HTTP/1.1 + WebSocket server, TLS 1.2/1.3 (rustls, ring), certificate generation,
# a Web Push client with its own DNS resolver, an embedded key-value store, argon2 and the whole web side (widget,
# dashboard, demo page). Built this way it measures about 8.3 MB (8,689,440 bytes in November 2026); 12 MB leaves room to grow while still catching a
# mistake such as a second TLS stack, a C crypto library, debug info or an unstripped build, each of which adds
# megabytes. A Raspberry Pi Zero's SD card and a 5-dollar VPS's RAM are the audience: small stays a feature.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
budget_mb=${NATTER_SIZE_BUDGET_MB:-12}
binary=target/$target/release/natter

# crt-static links glibc statically. natter resolves nothing through glibc's NSS at run time (Web Push uses a
# pure-Rust resolver), which is what makes a static glibc binary safe here.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release --locked --target "$target"

fail() { echo "static-build: $*" >&2; exit 1; }

[ -x "$binary" ] || fail "no binary at $binary"
# `ldd` says "not a dynamic executable" (glibc) or "statically linked" (newer glibc) for a static binary, and exits
# non-zero for the first; either way it must not list a shared library.
ldd_output=$(ldd "$binary" 2>&1 || true)
if echo "$ldd_output" | grep -q '=>'; then
    fail "the binary links shared libraries:\n$ldd_output"
fi
echo "$ldd_output" | grep -Eq 'not a dynamic executable|statically linked' || fail "ldd does not call it static: $ldd_output"
if command -v file >/dev/null; then
    file_output=$(file -L "$binary")
    echo "$file_output" | grep -Eq 'statically linked|static-pie linked' || fail "file does not call it static: $file_output"
    echo "$file_output" | grep -q 'dynamically linked' && fail "file calls it dynamic: $file_output"
fi
# No second crypto stack: ring is the one provider.
if cargo tree --locked --target "$target" -e normal -i aws-lc-rs >/dev/null 2>&1; then fail "aws-lc-rs is in the tree"; fi
if cargo tree --locked --target "$target" -e normal -i openssl-sys >/dev/null 2>&1; then fail "openssl-sys is in the tree"; fi

bytes=$(stat -c %s "$binary")
budget=$((budget_mb * 1024 * 1024))
[ "$bytes" -le "$budget" ] || fail "the binary is $bytes bytes, over the budget of $budget_mb MB"
"$binary" --version | grep -q '(static)' || fail "natter --version does not say static"

echo "static-build: $binary is static, $bytes bytes ($(( bytes / 1024 )) KiB), budget ${budget_mb} MB"
"$binary" --version
