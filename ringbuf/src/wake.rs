//! Wake-ups between processes: one eventfd per direction.
//!
//! The protocol (see `protocol.rs`) decides *whether* to wake; this module only moves the
//! signal. An eventfd is a counter in the kernel: `notify` adds 1, `wait` sleeps until it is
//! non-zero and resets it. Spurious wake-ups are harmless: every waiter re-checks the indices.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// One direction of wake-ups, backed by a non-blocking eventfd.
#[derive(Debug)]
pub(crate) struct Notifier {
    fd: OwnedFd,
}

impl Notifier {
    /// A fresh eventfd (close-on-exec, non-blocking).
    pub(crate) fn new() -> io::Result<Self> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { fd: efd.into() })
    }

    /// Wraps an eventfd received from the parent process.
    pub(crate) fn from_owned(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Wakes the other side: one `write(2)`.
    pub(crate) fn notify(&self) {
        match nix::unistd::write(&self.fd, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is saturated, so the other side is already signalled.
            Ok(_) | Err(Errno::EAGAIN) => {}
            // EBADF and friends would mean our own fd is broken: the waiter falls back to its
            // timeout, so a lost signal costs latency, never records.
            Err(_) => {}
        }
    }

    /// Resets the counter without sleeping.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.fd, &mut buf);
    }

    /// Sleeps until notified or until `timeout` (`None`: forever). Returns whether it was
    /// notified. Resets the counter.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so that a short timeout still sleeps instead of spinning.
            Some(t) => {
                PollTimeout::try_from(t.as_micros().div_ceil(1000).min(i32::MAX as u128) as u32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    self.drain();
                    return Ok(true);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A duplicate of the eventfd, for registering with an async reactor.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Notifier {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
