#!/usr/bin/env bash
# Builds the ring's, the adapters' and the gateway's tests for aarch64-unknown-linux-gnu and
# runs them under qemu-aarch64 (user mode) on a Debian x86_64 host without Docker. The peers
# (mosquitto, pymodbus, socat) stay native x86_64 processes on loopback. Installs what it needs
# (idempotent).
#
#   cross/test-aarch64.sh                         the three suites (what CI runs)
#   cross/test-aarch64.sh [cargo test args...]    anything else, e.g. -p edgegw --test demo
#
# How the aarch64 processes run:
# - cargo starts each test binary through CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER
#   (qemu-aarch64 -L /usr/aarch64-linux-gnu, from cross/env.sh);
# - the tests then start aarch64 children themselves: the gateway binary (CARGO_BIN_EXE_...),
#   which starts its adapter processes and the demo's broker from std::env::current_exe(),
#   and test binaries that re-exec themselves. qemu-user does not follow execve, so everything
#   runs under cross/with-binfmt.sh, which maps aarch64 executables to qemu through
#   binfmt_misc, as an ARM64 host runs them natively. No launcher variable in the code.
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
source cross/env.sh
cross_setup aarch64-unknown-linux-gnu

# Emulation is slower, and every exec'd producer pays qemu's start-up: a smaller stress run
# (still every record checked) and a longer watchdog (it catches hangs, not slowness).
export RINGBUF_STRESS_RECORDS="${RINGBUF_STRESS_RECORDS:-5000000}"
export RINGBUF_STRESS_WATCHDOG_SECS="${RINGBUF_STRESS_WATCHDOG_SECS:-300}"

run() { cross/with-binfmt.sh cargo test --release --locked --target aarch64-unknown-linux-gnu "$@"; }

if (($#)); then
    run "$@"
    exit
fi

# Build first (outside the emulator's accounting), then run. --lib --bins --tests: the doc
# tests are target-independent examples and run on the host.
suites=(-p edgegw-ringbuf -p edgegw-plc -p edgegw --lib --bins --tests)
cargo test --release --locked --target aarch64-unknown-linux-gnu "${suites[@]}" --no-run
run "${suites[@]}"
