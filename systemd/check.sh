#!/usr/bin/env bash
# Checks the service unit and the sysusers file without a running systemd (CI runs it through
# gateway/tests/systemd_unit.rs):
#   1. systemd-analyze verify: syntax, known directives, executables exist. The unit's
#      /usr/bin/edge-gateway is replaced by the binary under test (argument 1) in a copy.
#   2. systemd-analyze security --offline=true --threshold=20: fails if the exposure score is
#      above 2.0 (on the 0-10 scale; the threshold is in tenths).
#   3. systemd-sysusers into an empty root: the user and its dialout membership are created.
# Any warning from verify fails the check too. Needs systemd-analyze and systemd-sysusers
# (Debian package `systemd`; tests/install-peers.sh installs it).
#
# usage: systemd/check.sh [path/to/edge-gateway]   (default: target/release/edge-gateway)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/edge-gateway}"
unit="$here/edge-gateway.service"
sysusers="$here/edge-gateway.sysusers"
threshold=20

for tool in systemd-analyze systemd-sysusers; do
    command -v "$tool" >/dev/null || { echo "check: $tool is missing: apt-get install systemd" >&2; exit 1; }
done
[[ -x "$bin" ]] || { echo "check: no executable at $bin (build it first)" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. verify
sed "s#/usr/bin/edge-gateway#$bin#g" "$unit" > "$tmp/edge-gateway.service"
if ! out="$(systemd-analyze verify --man=no "$tmp/edge-gateway.service" 2>&1)"; then
    printf 'check: systemd-analyze verify failed:\n%s\n' "$out" >&2
    exit 1
fi
if [[ -n "$out" ]]; then
    printf 'check: systemd-analyze verify warns:\n%s\n' "$out" >&2
    exit 1
fi
echo "check: verify ok"

# 2. security score
if ! out="$(systemd-analyze security --offline=true --threshold="$threshold" "$unit" 2>&1)"; then
    printf '%s\n' "$out" | grep -E '✗|Overall' >&2 || printf '%s\n' "$out" >&2
    echo "check: exposure above $((threshold / 10)).$((threshold % 10))" >&2
    exit 1
fi
printf '%s\n' "$out" | grep 'Overall exposure' | sed 's/^→ /check: /'

# 3. sysusers
mkdir -p "$tmp/root/etc"
systemd-sysusers --root="$tmp/root" --replace=/usr/lib/sysusers.d/edge-gateway.conf - < "$sysusers" >/dev/null 2>&1
grep -q '^edge-gateway:x:[0-9]*:[0-9]*:.*:/var/lib/edge-gateway:' "$tmp/root/etc/passwd" \
    || { echo "check: sysusers did not create the edge-gateway user" >&2; exit 1; }
grep -q '^dialout:x:[0-9]*:.*edge-gateway' "$tmp/root/etc/group" \
    || { echo "check: sysusers did not add edge-gateway to dialout" >&2; exit 1; }
echo "check: sysusers ok"
