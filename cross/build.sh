#!/usr/bin/env bash
# Builds the `edge-gateway` binary for one target on a Debian x86_64 host, without Docker, and
# leaves a stripped copy in target/out/<target>/edge-gateway (its size printed). Installs what
# it needs first (Debian packages, the rustup target; for musl zig and cargo-zigbuild from
# PyPI); quick when everything is present. Needs root for apt-get.
#
#   cross/build.sh aarch64-unknown-linux-gnu      # ARM64, glibc >= 2.36 (Debian 12 devices)
#   cross/build.sh x86_64-unknown-linux-gnu       # amd64
#   cross/build.sh aarch64-unknown-linux-musl     # ARM64, static (see cross/README.md)
#   cross/build.sh TARGET --profile release       # [profile.release] instead of [profile.dist]
#
# [profile.dist] (root Cargo.toml) is what ships: fat LTO, opt-level "s", no debug info.
# [profile.release] keeps line tables (for backtraces) and shares its build with the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/env.sh

usage() { sed -n '2,13p' "$0" >&2; exit 2; }
(($# == 1 || $# == 3)) || usage
target=$1
profile=dist
if (($# == 3)); then
    [[ $2 == --profile ]] || usage
    profile=$3
fi
cross_setup "$target"

if [[ $target == *-musl ]]; then
    cargo zigbuild --profile "$profile" --locked --target "$target" -p edgegw --bin edge-gateway
else
    cargo build --profile "$profile" --locked --target "$target" -p edgegw --bin edge-gateway
fi

out=target/out/$target
mkdir -p "$out"
"$CROSS_STRIP" -o "$out/edge-gateway" "target/$target/$profile/edge-gateway"
bytes=$(stat -c %s "$out/edge-gateway")
printf 'cross: %s (profile %s): %s bytes (%s MiB) stripped\n' "$out/edge-gateway" "$profile" \
    "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
file -b "$out/edge-gateway" | sed 's/^/cross:   /'
