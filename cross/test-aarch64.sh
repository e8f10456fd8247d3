#!/usr/bin/env bash
# Builds the tests for aarch64-unknown-linux-gnu and runs them under qemu-aarch64 (user mode),
# on a Debian x86_64 host without Docker. Installs what it needs (idempotent).
#
#   cross/test-aarch64.sh [cargo test args...]     default: the ring's tests
#
# qemu-user proves the ARM64 build runs; it does not reproduce every weak-memory reordering of
# real ARM cores (the loom model is the proof of the orderings).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# Tests that re-exec their own binary need the emulator in front of it.
export EDGEGW_TEST_EXEC_WRAPPER="$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"
# Emulation is ~10-20x slower: a smaller stress run, still every record checked.
export RINGBUF_STRESS_RECORDS="${RINGBUF_STRESS_RECORDS:-5000000}"

if (($#)); then
    cargo test --release --target aarch64-unknown-linux-gnu "$@"
else
    # The ring's unit, model and API tests, and tests/stress.rs (fork and exec producers killed
    # at random). tests/cross_process.rs runs on the host only: its fork-safety check counts
    # threads, and qemu-user adds threads of its own.
    cargo test --release --target aarch64-unknown-linux-gnu -p edgegw-ringbuf --lib --test api --test model --test stress
fi
