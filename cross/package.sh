#!/usr/bin/env bash
# Builds the Debian package of edge-gateway for one target with cargo-deb and checks it:
#
#   cross/package.sh aarch64-unknown-linux-gnu    # -> target/debian/edge-gateway_<ver>-1_arm64.deb
#   cross/package.sh x86_64-unknown-linux-gnu     # -> target/debian/edge-gateway_<ver>-1_amd64.deb
#   cross/package.sh TARGET --profile release     # from [profile.release] instead of [profile.dist]
#   cross/package.sh TARGET --profile P --no-build # package the binary already in
#                                                  # $CARGO_TARGET_DIR (default target/)
#
# Installs cargo-deb (crates.io) and the cross toolchain if missing. The package metadata is
# [package.metadata.deb] in gateway/Cargo.toml; the unit and the sysusers file come from
# systemd/, the maintainer scripts from cross/debian/. The check lists the package (dpkg-deb
# -I/-c), unpacks it into a scratch root (dpkg -x) and fails unless every file is where the
# service expects it; for the host's architecture it also runs the unpacked binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/env.sh

usage() { sed -n '2,9p' "$0" >&2; exit 2; }
(($#)) || usage
target=$1
shift
profile=dist
no_build=()
while (($#)); do
    case $1 in
    --profile) (($# >= 2)) || usage; profile=$2; shift 2 ;;
    --no-build) no_build=(--no-build); shift ;;
    *) usage ;;
    esac
done
cross_setup "$target"
cross_apt dpkg-dev
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet

for f in systemd/edge-gateway.service systemd/edge-gateway.sysusers systemd/edge-gateway.udev-rules; do
    [[ -f $f ]] || { echo "package: $f is missing (the systemd unit work provides it)" >&2; exit 1; }
done

# cargo-deb builds the binary with the profile (or, with --no-build, takes the one that is
# there) and strips it in the package. For the host's own triple it builds without --target,
# into target/<profile>/ (what `cargo test --release` already built, in CI).
args=(--locked -p edgegw --profile "$profile" --strip "${no_build[@]}")
[[ $target == "$(rustc -vV | sed -n 's/^host: //p')" ]] || args+=(--target "$target")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo deb "${args[@]}" 2>&1 | tee "$log" >&2
deb=$(grep -E '\.deb$' "$log" | tail -n1)
[[ -f $deb ]] || { echo "package: cargo-deb printed no .deb path" >&2; exit 1; }

echo "== $deb ($(stat -c %s "$deb") bytes)"
dpkg-deb -I "$deb"
dpkg-deb -c "$deb"

root=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
ctl=$root/DEBIAN
dpkg-deb -e "$deb" "$ctl"

fail() { echo "package: $deb: $*" >&2; exit 1; }
unit=$(find "$root" -path '*/systemd/system/edge-gateway.service' | head -n1)
[[ -n $unit ]] || fail "no edge-gateway.service under .../systemd/system/"
sysusers=$(find "$root" -path '*/sysusers.d/edge-gateway.conf' | head -n1)
[[ -n $sysusers ]] || fail "no sysusers.d/edge-gateway.conf"
[[ -x $root/usr/bin/edge-gateway ]] || fail "no executable /usr/bin/edge-gateway"
cmp -s "$root/lib/udev/rules.d/60-edge-gateway.rules" systemd/edge-gateway.udev-rules \
    || fail "no /lib/udev/rules.d/60-edge-gateway.rules (systemd/edge-gateway.udev-rules)"
cmp -s "$root/etc/edge-gateway/gateway.toml" gateway/config/gateway.example.toml \
    || fail "/etc/edge-gateway/gateway.toml is not the example configuration"
grep -qx /etc/edge-gateway/gateway.toml "$ctl/conffiles" || fail "gateway.toml is not a conffile"
grep -q 'systemd-sysusers' "$ctl/postinst" || fail "postinst does not run systemd-sysusers"
grep -q '/var/lib/edge-gateway' "$ctl/postinst" || fail "postinst does not create the state directory"
grep -q '^ExecStart=/usr/bin/edge-gateway' "$unit" || fail "the unit does not start /usr/bin/edge-gateway"
for s in "$ctl"/preinst "$ctl"/postinst "$ctl"/prerm "$ctl"/postrm; do
    [[ -f $s ]] && { sh -n "$s" || fail "$(basename "$s") is not valid sh"; }
done
arch=$(dpkg-deb -f "$deb" Architecture)
file -b "$root/usr/bin/edge-gateway" | grep -q "$( [[ $arch == arm64 ]] && echo aarch64 || echo x86-64 )" \
    || fail "usr/bin/edge-gateway is not a $arch binary"
file -b "$root/usr/bin/edge-gateway" | grep -q 'not stripped' && fail "usr/bin/edge-gateway is not stripped"
if [[ $arch == "$(dpkg --print-architecture)" ]]; then
    "$root/usr/bin/edge-gateway" --help >/dev/null || fail "the unpacked binary does not run"
fi
echo "package: $deb ($arch) ok: binary $(stat -c %s "$root/usr/bin/edge-gateway") bytes, $(dpkg-deb -f "$deb" Depends)"
