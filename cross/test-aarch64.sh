#!/usr/bin/env bash
# Builds the ring's, the adapters' and the gateway's tests for aarch64-unknown-linux-gnu and
# runs them under qemu-aarch64 (user mode) on a Debian x86_64 host without Docker. The peers
# (mosquitto, pymodbus, socat) stay native x86_64 processes on loopback. Installs what it needs
# (idempotent).
#
#   cross/test-aarch64.sh                         the three suites (what CI runs)
#   cross/test-aarch64.sh --build                 only build them (CI does it in the background)
#   cross/test-aarch64.sh [cargo test args...]    anything else, e.g. -p edgegw --test demo
#
# Builds go to $CARGO_TARGET_DIR, by default target/cross: apart from the host's target/, which
# a running `cargo test` keeps locked, so the two can build and run side by side. The gateway
# binary these builds make is target/cross/aarch64-unknown-linux-gnu/release/edge-gateway.
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
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cross}"
source cross/env.sh
cross_setup aarch64-unknown-linux-gnu

# Emulation is slower, and every exec'd producer pays qemu's start-up: a smaller stress run
# (still every record checked, still at least 20 producers killed per scenario) and a longer
# watchdog (it catches hangs, not slowness). With 5M records the exec scenarios of stress.rs and
# cross_process.rs took over 300 s each under qemu on a loaded 2-core host.
export RINGBUF_STRESS_RECORDS="${RINGBUF_STRESS_RECORDS:-1000000}"
export RINGBUF_STRESS_WATCHDOG_SECS="${RINGBUF_STRESS_WATCHDOG_SECS:-300}"
# The ring's tests re-exec themselves through this prefix, so the child is a process named
# qemu-aarch64 whose RCU thread the fork check recognises. (Started through binfmt_misc alone,
# that thread carries the guest binary's name and the check refuses to fork: a limit of the
# check's heuristic, see ringbuf/tests/xproc/mod.rs, not of the ring.)
export EDGEGW_TEST_EXEC_WRAPPER="$CROSS_QEMU_AARCH64"

# Excluded under qemu, each for a reason of emulation speed, not of the ARM64 build. They run
# on the host in the main test stage. Emulated code runs several times slower than native, and
# CI shares 2 cores with the native peers:
skips=(
    # The adapters mark a poll cycle that outlasts its interval Uncertain(Overrun), and these
    # tests require every cycle on time (100 ms intervals): under qemu cycles overran.
    --skip every_type_and_byte_order_matches_what_pymodbus_encodes
    --skip a_silent_device_does_not_delay_another_devices_polls
    --skip illegal_address_reports_exception_code_2_and_other_reads_stay_good
    --skip units_on_one_serial_line_are_polled_and_a_silent_unit_only_times_out_itself
    # Not of speed: these two install a seccomp filter that denies membarrier, and qemu-user
    # does not emulate seccomp (prctl(PR_SET_SECCOMP) fails with EINVAL).
    --skip a_consumer_denied_membarrier_by_seccomp_is_woken_for_every_record
    --skip a_consumer_that_loses_membarrier_after_attaching_is_woken_for_every_record
    # Not of speed: qemu-user 7.2 answers madvise(MADV_POPULATE_WRITE) with success and does
    # nothing (4096 of 200704 bytes resident after the claim), so the pages a claim faults in
    # on a real kernel are not there to count.
    --skip claiming_either_side_maps_the_whole_ring_into_that_process
)

run() { cross/with-binfmt.sh cargo test --release --locked --target aarch64-unknown-linux-gnu "$@"; }

if (($#)) && [[ $1 != --build ]]; then
    run "$@"
    exit
fi

# Build first (outside the emulator's accounting), then run. --lib --bins --tests: the doc
# tests are target-independent examples and run on the host.
suites=(-p edgegw-ringbuf -p edgegw-plc -p edgegw --lib --bins --tests)
cargo test --release --locked --target aarch64-unknown-linux-gnu "${suites[@]}" --no-run
[[ ${1:-} == --build ]] && exit
run --no-fail-fast "${suites[@]}" -- "${skips[@]}"
