#!/usr/bin/env bash
# The ARM64 and packaging stage of CI (tests/run-all.sh calls it after the host's tests):
#
# 1. the ring's tests built for aarch64-unknown-linux-gnu and run under qemu-aarch64. The
#    adapters' and the gateway's suites under qemu (`bash cross/test-aarch64.sh`, all three
#    suites, peers native on loopback) are not in CI yet: several of their tests depend on
#    emulated timing, and the whole CI run must stay within its time (see cross/README.md);
# 2. the demo under qemu, with the memory of each of its processes (cross/demo-rss.sh);
# 3. the arm64 and amd64 Debian packages, built and checked (cross/package.sh).
#
# To stay within CI's time, everything here uses [profile.release], whose builds the tests
# already made (aarch64 here, the host's in the stage before): the packages are checked for
# layout and scripts, not for size. The shipped binary and packages use [profile.dist]:
# cross/build.sh and cross/package.sh without --profile (figures in cross/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
step() { printf '\n== cross/ci.sh [%4ss] %s\n' "$SECONDS" "$*"; }

step "aarch64: the ring's tests under qemu-aarch64"
# qemu-user does not emulate seccomp filters (prctl(PR_SET_SECCOMP) fails with EINVAL), which
# the two membarrier-fallback tests install; they run on the host (see cross/README.md).
bash cross/test-aarch64.sh -p edgegw-ringbuf --lib --tests -- \
    --skip a_consumer_denied_membarrier_by_seccomp_is_woken_for_every_record \
    --skip a_consumer_that_loses_membarrier_after_attaching_is_woken_for_every_record

step "aarch64 binary (release profile) and the demo under qemu"
bash cross/build.sh aarch64-unknown-linux-gnu --profile release
bash cross/demo-rss.sh target/aarch64-unknown-linux-gnu/release/edge-gateway

step "Debian packages (release profile)"
bash cross/package.sh aarch64-unknown-linux-gnu --profile release
bash cross/package.sh x86_64-unknown-linux-gnu --profile release

step "done"
