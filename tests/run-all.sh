#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` runs exactly this). Installs what it needs,
# then runs every layer: lint, unit/property/integration tests against real peers, the loom
# model, miri, short fuzz runs, and the ARM64 build under qemu. Fails loudly on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
SECONDS=0
stage() { printf '\n==== [%4ss] %s\n' "$SECONDS" "$*"; }

stage "install peers and toolchains (the cargo tools come later, in the background)"
bash tests/install-peers.sh --system

stage "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

stage "build the tests"
cargo test --workspace --release --no-run

# While the host's tests run they leave much of the two cores idle (they wait on their peers),
# so the boot test's container tree (debootstrap), the cargo tools (cargo-fuzz, cargo-deb) and
# the aarch64 builds of the ARM64 stage are made meanwhile, at the lowest CPU priority: the
# tests keep the CPU whenever they want it. The aarch64 builds go to target/cross/, so they
# neither wait for the lock cargo keeps on target/ nor touch the host's build. Waited for
# before the fuzz stage; on any exit it is stopped.
background_log=target/ci-background.log
(nice -n 19 bash systemd/boot-test.sh --prepare && nice -n 19 bash tests/install-peers.sh --cargo-tools \
    && nice -n 19 bash cross/ci.sh build) >"$background_log" 2>&1 &
background=$!
kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}
trap 'kill_tree "$background"' EXIT

stage "tests (unit, property, cross-process, real peers)"
cargo test --workspace --release

stage "loom model of the ring's park protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p edgegw-ringbuf --lib --release loom

stage "miri over the ring's in-process logic"
CARGO_TARGET_DIR=target/miri cargo +nightly miri test -p edgegw-ringbuf --test model

stage "wait for the background builds (container tree, cargo tools, aarch64 suites)"
if ! wait "$background"; then
    cat "$background_log"
    echo "run-all: the background builds failed (log above: $background_log)" >&2
    exit 1
fi
trap - EXIT
grep -E '^(== |install-peers|boot-test)' "$background_log" || true

stage "fuzz (short runs; long-run commands in plc-adapters/README.md)"
(cd plc-adapters/fuzz && mkdir -p corpus/decode corpus/config \
    && cargo +nightly fuzz run decode corpus/decode seeds/decode -- -max_total_time=30 \
    && cargo +nightly fuzz run config corpus/config seeds/config -- -max_total_time=30)

stage "ARM64 and packages: the three suites under qemu-aarch64, the aarch64 demo under qemu, the arm64 and amd64 .deb"
bash cross/ci.sh

stage "the amd64 package under a real systemd 252 (nspawn): start, hardening, data, reload, stop, exit 78"
bash systemd/boot-test.sh "$(ls -t target/debian/edge-gateway_*_amd64.deb | head -n1)"

stage "done"
