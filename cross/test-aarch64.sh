#!/usr/bin/env bash
# Builds the tests for aarch64-unknown-linux-gnu and runs them under qemu-aarch64 (user mode),
# on a Debian x86_64 host without Docker. Installs what it needs (idempotent).
#
#   cross/test-aarch64.sh [cargo test args...]     default: the ring's tests
#
# qemu-user proves the ARM64 build runs; it does not reproduce every weak-memory reordering of
# real ARM cores (the loom model is the proof of the orderings). Two qemu-user facts the ring's
# tests depend on (seen with qemu 7.2 on Debian 12):
# - qemu fakes /proc/self/stat for the emulated process: its own start time (field 22) reads
#   2 to 395 ticks away from what every other process reads for the same pid, so the ring
#   identifies a live side by an OFD lock on its memfd, never by pid + start time;
# - every emulated process has a second host thread (qemu's RCU thread, named qemu-aarch64),
#   which qemu quiesces around fork; the fork tests allow it and no other thread.
# Set CARGO_TARGET_DIR to keep these builds apart from the host's.
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
# Emulation is slower, and every exec'd producer pays qemu's start-up: a smaller stress run
# (still every record checked) and a longer watchdog (it catches hangs, not slowness).
export RINGBUF_STRESS_RECORDS="${RINGBUF_STRESS_RECORDS:-5000000}"
export RINGBUF_STRESS_WATCHDOG_SECS="${RINGBUF_STRESS_WATCHDOG_SECS:-300}"

if (($#)); then
    cargo test --release --target aarch64-unknown-linux-gnu "$@"
else
    # The ring's unit, model and API tests, and tests/stress.rs (fork and exec producers killed
    # at random), all verified under qemu. tests/cross_process.rs runs on the host; it has a qemu
    # allowance for the RCU thread (above), but was not yet verified here end to end.
    cargo test --release --target aarch64-unknown-linux-gnu -p edgegw-ringbuf --lib --test api --test model --test stress
fi
