# Sourced by the scripts in cross/: installs (idempotently) and exports what cargo needs to
# build for one target on a Debian x86_64 host without Docker. Not a .cargo/config.toml on
# purpose: these settings apply only where a cross script asks for them.
#
#   source cross/env.sh; cross_setup <target>
#
# Targets: x86_64-unknown-linux-gnu (native), aarch64-unknown-linux-gnu (Debian's cross gcc,
# qemu-user as the runner), aarch64-unknown-linux-musl (static; zig as the C compiler and
# linker through cargo-zigbuild, see cross/README.md).

# Installs the Debian packages that are not installed yet (needs root; quick when present).
cross_apt() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if ((${#need[@]})); then
        echo "cross: apt-get install ${need[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

cross_rustup_target() {
    rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}

# The qemu-user invocation that runs an aarch64 glibc binary on this host.
CROSS_QEMU_AARCH64="qemu-aarch64 -L /usr/aarch64-linux-gnu"

# Sets CROSS_STRIP (the strip for the target) and exports the cargo/cc variables.
cross_setup() {
    local target=$1
    case "$target" in
    x86_64-unknown-linux-gnu)
        cross_apt binutils
        cross_rustup_target "$target"
        CROSS_STRIP=strip
        ;;
    aarch64-unknown-linux-gnu)
        cross_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user
        cross_rustup_target "$target"
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$CROSS_QEMU_AARCH64"
        # The cc crate builds bundled SQLite (rusqlite) and ring's C and assembly with these.
        export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
        export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
        # An aarch64 process that execs another aarch64 binary (the gateway's adapters, the
        # demo's broker) goes through binfmt_misc, where qemu finds the libraries here.
        export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
        CROSS_STRIP=aarch64-linux-gnu-strip
        ;;
    aarch64-unknown-linux-musl)
        cross_apt binutils-aarch64-linux-gnu qemu-user
        cross_rustup_target "$target"
        # zig compiles the C code (SQLite, ring) against its own aarch64 musl headers and links
        # statically; cargo-zigbuild sets CC/AR/linker for the target itself.
        # Both from PyPI (prebuilt): zig as a Python package, cargo-zigbuild as a wheel.
        if ! python3 -m ziglang version >/dev/null 2>&1 || ! command -v cargo-zigbuild >/dev/null; then
            echo "cross: pip install ziglang cargo-zigbuild" >&2
            python3 -m pip install --quiet --root-user-action=ignore ziglang cargo-zigbuild
        fi
        CROSS_STRIP=aarch64-linux-gnu-strip
        ;;
    *)
        echo "cross: unknown target '$target' (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, aarch64-unknown-linux-musl)" >&2
        return 2
        ;;
    esac
}
