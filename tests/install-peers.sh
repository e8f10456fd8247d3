#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine that has only the Rust
# toolchain: the real peers (mosquitto, pymodbus, socat), the ARM64 cross toolchain and qemu-user,
# debootstrap and systemd-nspawn for systemd/boot-test.sh, and the Rust components (aarch64
# target, nightly miri), then the cargo tools (cargo-fuzz, cargo-deb). Idempotent and quick
# when everything is present. Needs root for apt-get (CI runs as root).
#
#   tests/install-peers.sh                 everything
#   tests/install-peers.sh --system        everything but the cargo tools
#   tests/install-peers.sh --cargo-tools   only the cargo tools (compiled from crates.io: about
#                                          3 min on 2 cores; run-all.sh builds them in the
#                                          background while the host's tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case $what in
all | --system | --cargo-tools) ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac

cargo_tools() {
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
    command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
}
if [[ $what == --cargo-tools ]]; then
    cargo_tools
    echo "install-peers: cargo tools ok"
    exit
fi

apt_packages=(mosquitto mosquitto-clients socat openssl systemd file procps gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    debootstrap systemd-container)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-peers: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts mosquitto as a service on install; the tests start their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl stop mosquitto || true
fi

bash plc-adapters/scripts/install-test-peers.sh

rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
    rustup component add --toolchain nightly miri rust-src
fi
[[ $what == --system ]] || cargo_tools
echo "install-peers: ok"
