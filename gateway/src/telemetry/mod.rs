//! What the gateway tells the outside about itself.
//!
//! - [`notify`]: systemd's `sd_notify` (ready, reloading, stopping, status, watchdog) and the
//!   watchdog's notion of progress.

pub mod notify;
