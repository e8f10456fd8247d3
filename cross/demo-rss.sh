#!/usr/bin/env bash
# Runs `edge-gateway demo` and reports the memory of every process it consists of: the gateway,
# its adapter processes and the demo's broker (children of the same binary). Resident set sizes
# are sampled from /proc every 100 ms; per process the kernel's own peak (VmHWM) is reported,
# plus the peak of the sum over the whole tree.
#
#   cross/demo-rss.sh BINARY [demo args...]        default args: --seconds 10 --outage 3
#
# An aarch64 BINARY runs under qemu-user (through cross/with-binfmt.sh): its figures include
# the emulator's own memory (code cache, the guest's page tables), so they are an upper bound
# for a real ARM64 device. Fails if the demo fails (it exits non-zero when a record is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
(($#)) || { sed -n '2,10p' "$0" >&2; exit 2; }
bin=$1
shift
(($#)) || set -- --seconds 10 --outage 3

wrap=()
if file -b "$bin" | grep -q aarch64; then
    source cross/env.sh
    cross_setup aarch64-unknown-linux-gnu
    wrap=(cross/with-binfmt.sh)
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
RUST_LOG=warn "${wrap[@]}" "$bin" demo "$@" >"$out" 2>&1 &
launcher=$!
python3 - "$launcher" <<'EOF'
import os, sys, time

root = int(sys.argv[1])

def status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: v.strip() for k, v in (l.split(":", 1) for l in f if ":" in l)}
    except OSError:
        return None

def args(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            a = f.read().split(b"\0")
        a = [x.decode() for x in a if x]
    except OSError:
        return ""
    # Under qemu the process is "qemu-aarch64 [-L DIR] PATH [ARGV0] ARGS": name it by the guest.
    if a and a[0].endswith("qemu-aarch64"):
        a = a[3:] if a[1:2] == ["-L"] else a[1:]
        if len(a) > 1 and os.path.basename(a[0]) == os.path.basename(a[1]):
            a = a[1:]  # binfmt_misc's P flag passes the path, then the original argv[0]
    return " ".join([os.path.basename(a[0])] + a[1:]) if a else ""

def tree():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = status(int(d))
            if s:
                kids.setdefault(int(s["PPid"]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out

kb = lambda s, k: int(s.get(k, "0 kB").split()[0])
peak_sum, hwm, names = 0, {}, {}
while status(root) is not None and status(root).get("State", "").split()[0] != "Z":
    total = 0
    for p in tree():
        s = status(p)
        if not s:
            continue
        if s.get("Name") in ("bash", "with-binfmt.sh", "unshare"):
            continue  # the launcher's shell, not the demo
        total += kb(s, "VmRSS")
        hwm[p] = max(hwm.get(p, 0), kb(s, "VmHWM"))
        names.setdefault(p, args(p))
    peak_sum = max(peak_sum, total)
    time.sleep(0.1)
for p, h in sorted(hwm.items()):
    if h:
        print(f"rss: pid {p:>7}  peak {h / 1024:6.1f} MiB  {names[p][:90]}")
print(f"rss: peak of the sum over the demo's processes: {peak_sum / 1024:.1f} MiB")
EOF
set +e
wait "$launcher"
rc=$?
set -e
grep -E '^demo summary' "$out" || { cat "$out"; echo "demo-rss: no summary line" >&2; exit 1; }
((rc == 0)) || { cat "$out"; echo "demo-rss: demo exited $rc" >&2; exit "$rc"; }
