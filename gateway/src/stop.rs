//! SIGTERM and SIGINT, the signals that stop `run` and an adapter child cleanly.
//!
//! The handlers are installed when [`StopSignals::install`] returns, not when a future is first
//! polled: a process that has told systemd it is ready (or whose adapters are already running)
//! must never meet a SIGTERM with the default action, which ends it without a drain. Until the
//! handlers are installed nothing has started, so the default action loses nothing.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: systemd's stop, or `kill`.
    Term,
    /// SIGINT: Ctrl-C at a terminal.
    Int,
}

impl StopSignal {
    /// The signal's name, for the log.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
        }
    }
}

/// Handlers for SIGTERM and SIGINT, installed; [`StopSignals::recv`] waits for either.
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs both handlers now. Must be called inside a tokio runtime with I/O enabled.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first of the two signals (a signal delivered since
    /// [`install`](Self::install) counts).
    pub async fn recv(mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Term,
            _ = self.int.recv() => StopSignal::Int,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal as NixSignal, raise};

    /// A signal raised after `install` and before anyone waits is not lost, and does not end
    /// the process.
    #[tokio::test]
    async fn a_signal_before_the_first_wait_is_kept() {
        let stop = StopSignals::install().unwrap();
        raise(NixSignal::SIGINT).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(stop.recv().await, StopSignal::Int);
    }
}
