//! `membarrier(2)`, the heavy half of the asymmetric fence in `protocol.rs`.
//!
//! A producer process registers with `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` before it claims
//! a ring; a parking consumer calls `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, which returns only after
//! every running thread of every registered process has executed a full memory barrier (and the
//! caller itself, at entry and exit). Either call can fail: no such syscall (`ENOSYS`, old
//! kernels, some emulators), command not supported (`EINVAL`), or denied by a seccomp filter
//! (`EPERM`, e.g. systemd's `SystemCallFilter=`). Callers then take the real-fence path.
//!
//! miri cannot run the syscall: under `cfg(miri)` both calls report failure, so the heap rings
//! miri checks always take the real-fence path.

/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (linux/membarrier.h).
#[cfg(not(miri))]
const CMD_GLOBAL_EXPEDITED: nix::libc::c_int = 1 << 1;
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` (linux/membarrier.h).
#[cfg(not(miri))]
const CMD_REGISTER_GLOBAL_EXPEDITED: nix::libc::c_int = 1 << 2;

/// Issues `membarrier(cmd, 0, 0)`; `true` if it returned 0.
#[cfg(not(miri))]
fn membarrier(cmd: nix::libc::c_int) -> bool {
    // SAFETY: membarrier takes two integers and a cpu id and touches no memory of ours; a kernel
    // without it returns ENOSYS and a seccomp filter EPERM, both reported as failure here.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_membarrier,
            cmd,
            0 as nix::libc::c_uint,
            0 as nix::libc::c_int,
        )
    };
    rc == 0
}

/// Registers this process, so a consumer's [`global_expedited`] reaches its threads. Idempotent
/// and cheap once registered; the first call of a multi-threaded process waits for an RCU grace
/// period (about 13 ms here), so it is made before a producer claims its ring, at every claim (a
/// registration is per process and survives `fork`, but a claim does not rely on that).
pub(crate) fn register_process() -> bool {
    #[cfg(miri)]
    {
        false
    }
    #[cfg(not(miri))]
    {
        membarrier(CMD_REGISTER_GLOBAL_EXPEDITED)
    }
}

/// A full barrier on every running thread of every registered process. `false` if the call
/// failed; the caller must then issue its own `fence(SeqCst)` (a failed call promises nothing).
pub(crate) fn global_expedited() -> bool {
    #[cfg(miri)]
    {
        false
    }
    #[cfg(not(miri))]
    {
        membarrier(CMD_GLOBAL_EXPEDITED)
    }
}
