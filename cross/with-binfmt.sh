#!/usr/bin/env bash
# Runs a command where executing an aarch64 ELF binary starts it under qemu-aarch64, as on an
# ARM64 machine: an aarch64 process that execs another aarch64 binary (the gateway's adapter
# processes and the demo's broker are the gateway binary itself, found by
# std::env::current_exe()) works without any launcher in the code.
#
#   cross/with-binfmt.sh COMMAND [ARGS...]
#
# - If the host already hands aarch64 binaries to qemu (Debian's qemu-user-binfmt or
#   qemu-user-static registered them), COMMAND runs as it is.
# - Otherwise COMMAND runs in a new user and mount namespace with a binfmt_misc instance of its
#   own (Linux >= 6.7 lets a user namespace mount one), in which the aarch64 ELF magic maps to
#   /usr/bin/qemu-aarch64. Nothing changes for the rest of the machine. All uids and gids map to
#   themselves, so peers that drop privileges (mosquitto started as root) still work; we need to
#   be root to write that map. Loopback, files and processes are shared with the host.
# - Neither possible: this fails and says why (nothing is skipped).
#
# qemu finds the aarch64 libraries through QEMU_LD_PREFIX (cross/env.sh exports it).
set -euo pipefail

if (($# == 0)); then
    sed -n '2,8p' "$0" >&2
    exit 2
fi

host_has_aarch64_binfmt() {
    local f
    for f in /proc/sys/fs/binfmt_misc/qemu-aarch64 /proc/sys/fs/binfmt_misc/qemu-aarch64-static; do
        [[ -r $f ]] && head -n1 "$f" | grep -qx enabled && return 0
    done
    return 1
}

if [[ ${1:-} == --inside ]]; then
    # In the new namespaces: wait until the parent has written our uid/gid maps, then mount
    # our own binfmt_misc and register qemu for aarch64 ELF executables and shared objects
    # (e_machine 0xb7). Flags: F opens qemu now (no lookup at exec time), P keeps argv[0].
    go=$2
    shift 2
    read -r _ <"$go"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || {
        echo "with-binfmt: cannot mount binfmt_misc in a user namespace (needs Linux >= 6.7, this is $(uname -r)); install qemu-user-binfmt instead" >&2
        exit 1
    }
    magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    printf '%s' ":qemu-aarch64:M::$magic:$mask:/usr/bin/qemu-aarch64:FP" >/proc/sys/fs/binfmt_misc/register
    exec "$@"
fi

if host_has_aarch64_binfmt; then
    exec "$@"
fi

[[ -x /usr/bin/qemu-aarch64 ]] || { echo "with-binfmt: /usr/bin/qemu-aarch64 missing (apt-get install qemu-user)" >&2; exit 1; }
if ((EUID != 0)); then
    echo "with-binfmt: the host has no binfmt_misc entry for aarch64, and only root can map every uid into a user namespace to make one; run as root or install qemu-user-binfmt" >&2
    exit 1
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/go"
unshare --user --mount --propagation private -- "$BASH" "$0" --inside "$dir/go" "$@" &
pid=$!
# unshare(2) happens before its exec: wait until the child is in its own user namespace.
ours=$(readlink /proc/self/ns/user)
for _ in $(seq 500); do
    theirs=$(readlink "/proc/$pid/ns/user" 2>/dev/null) || break
    [[ $theirs != "$ours" ]] && break
    sleep 0.01
done
if [[ ${theirs:-$ours} == "$ours" ]]; then
    kill "$pid" 2>/dev/null || true
    echo "with-binfmt: could not create a user namespace (kernel.unprivileged_userns_clone or a container policy?)" >&2
    exit 1
fi
echo "0 0 4294967295" >"/proc/$pid/uid_map"
echo "0 0 4294967295" >"/proc/$pid/gid_map"
echo go >"$dir/go"
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
set +e
wait "$pid"
rc=$?
exit "$rc"
