#!/usr/bin/env bash
# The ARM64 and packaging stage of CI (tests/run-all.sh):
#
#   cross/ci.sh build   the aarch64 builds only: the three suites' test binaries and the gateway
#                       binary, into target/cross/. run-all.sh starts this in the background,
#                       at the lowest CPU priority, while the host's tests run (they leave much of
#                       the two cores idle, waiting on their peers), and waits for it here.
#   cross/ci.sh         the stage itself (builds whatever is still missing first):
#     1. the ring's, the adapters' and the gateway's tests under qemu-aarch64, the peers native
#        on loopback (cross/test-aarch64.sh; a few tests are excluded by name there, each for a
#        reason of emulation speed, and run on the host);
#     2. the demo under qemu, with the memory of each of its processes (cross/demo-rss.sh), from
#        the gateway binary the test build made;
#     3. the arm64 and amd64 Debian packages, from the binaries already built (the aarch64 one
#        above, the host's by the main test stage), checked for layout and scripts.
#
# To stay within CI's time, everything here uses [profile.release] binaries that the tests
# built; the packages are checked for layout and scripts, not for size. The shipped binary and
# packages use [profile.dist]: cross/build.sh and cross/package.sh without --profile (figures
# in cross/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/cross
SECONDS=0
step() { printf '\n== cross/ci.sh [%4ss] %s\n' "$SECONDS" "$*"; }

case ${1:-} in
build)
    step "aarch64: build the three suites (and the gateway binary)"
    bash cross/test-aarch64.sh --build
    step "done"
    exit
    ;;
"") ;;
*) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac

step "aarch64: the ring's, the adapters' and the gateway's tests under qemu-aarch64"
bash cross/test-aarch64.sh

step "the demo under qemu (the test build's aarch64 binary)"
bash cross/demo-rss.sh target/cross/aarch64-unknown-linux-gnu/release/edge-gateway

step "Debian packages (release profile, binaries already built)"
bash cross/package.sh aarch64-unknown-linux-gnu --profile release --no-build
CARGO_TARGET_DIR=target bash cross/package.sh x86_64-unknown-linux-gnu --profile release --no-build

step "done"
