#!/usr/bin/env bash
# The ARM64 and packaging stage of CI (tests/run-all.sh):
#
#   cross/ci.sh build          the aarch64 builds only: the three suites' test binaries and the
#                              gateway binary, into target/cross/. run-all.sh starts this in the
#                              background, at the lowest CPU priority, at the start of the run,
#                              and waits for it just before the stage below.
#   cross/ci.sh package-amd64  the amd64 Debian package from the host's release binary that the
#                              main test build made (run-all.sh needs it for the boot test,
#                              which runs while the aarch64 builds are still going).
#   cross/ci.sh                the stage itself (builds whatever is still missing first):
#     1. the ring's, the adapters' and the gateway's tests under qemu-aarch64, the peers native
#        on loopback (cross/test-aarch64.sh; a few tests are excluded by name there, each for a
#        reason of emulation speed, and run on the host);
#     2. the demo under qemu, with the memory of each of its processes (cross/demo-rss.sh), from
#        the gateway binary the test build made;
#     3. the arm64 Debian package from the aarch64 binary built above, checked for layout and
#        scripts.
#
# To stay within CI's time, everything here uses [profile.release] binaries that the tests
# built; the packages are checked for layout and scripts, not for size. The shipped binary and
# packages use [profile.dist]: cross/build.sh and cross/package.sh without --profile (figures
# in cross/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/cross
# No line tables in CI's aarch64 builds: less to compile and link in the background job (a
# failing test under qemu still prints its panic message; rerun it with cross/test-aarch64.sh
# for a backtrace with lines). Set for the build and the stage alike, so the stage reuses it.
export CARGO_PROFILE_RELEASE_DEBUG=false
SECONDS=0
step() { printf '\n== cross/ci.sh [%4ss] %s\n' "$SECONDS" "$*"; }

case ${1:-} in
build)
    step "aarch64: build the three suites (and the gateway binary)"
    bash cross/test-aarch64.sh --build
    step "done"
    exit
    ;;
package-amd64)
    step "Debian package, amd64 (release profile, the host's binary already built)"
    CARGO_TARGET_DIR=target bash cross/package.sh x86_64-unknown-linux-gnu --profile release --no-build
    exit
    ;;
"") ;;
*) sed -n '2,23p' "$0" >&2; exit 2 ;;
esac

step "aarch64: the ring's, the adapters' and the gateway's tests under qemu-aarch64"
bash cross/test-aarch64.sh

step "the demo under qemu (the test build's aarch64 binary)"
bash cross/demo-rss.sh target/cross/aarch64-unknown-linux-gnu/release/edge-gateway

step "Debian package, arm64 (release profile, the aarch64 binary already built)"
bash cross/package.sh aarch64-unknown-linux-gnu --profile release --no-build

step "done"
