#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` runs exactly this). Installs what it needs,
# then runs every layer: lint, unit/property/integration tests against real peers, the loom
# model, miri, short fuzz runs, and the ARM64 build under qemu. Fails loudly on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
SECONDS=0
stage() { printf '\n==== [%4ss] %s\n' "$SECONDS" "$*"; }

stage "install peers and toolchains"
bash tests/install-peers.sh

stage "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

stage "tests (unit, property, cross-process, real peers)"
cargo test --workspace --release

stage "loom model of the ring's park protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p edgegw-ringbuf --lib --release loom

stage "miri over the ring's in-process logic"
CARGO_TARGET_DIR=target/miri cargo +nightly miri test -p edgegw-ringbuf --test model

stage "fuzz (short runs; long-run commands in plc-adapters/README.md)"
(cd plc-adapters/fuzz && mkdir -p corpus/decode corpus/config \
    && cargo +nightly fuzz run decode corpus/decode seeds/decode -- -max_total_time=30 \
    && cargo +nightly fuzz run config corpus/config seeds/config -- -max_total_time=30)

stage "ARM64 and packages: the ring's tests under qemu-aarch64, the aarch64 demo under qemu, the arm64 and amd64 .deb"
bash cross/ci.sh

stage "done"
