//! A CPU wake-up latency request: Linux PM QoS through `/dev/cpu_dma_latency`.
//!
//! A parked consumer is woken on a CPU that is idle. How long that CPU takes to run it depends
//! on how deep it sleeps: an exit from a deep idle state costs tens to hundreds of µs on ARM
//! boards, and on a VM a halted vCPU must be rescheduled by the host (on the 2-vCPU machine the
//! benchmark was written on, 170-260 µs in earlier sessions and 45-80 µs on a later day, for the
//! pipe's reader as well as the ring's consumer). The kernel keeps no
//! CPU in an idle state whose exit latency exceeds the lowest request in force; 0 keeps idle
//! CPUs polling instead of halting. This is what `cyclictest` and tuned's latency profiles do.
//!
//! The cost is power: every idle CPU stays in its shallowest state while a request of 0 is held.
//! So nothing here is on by default; the gateway holds one only when configured to.
//!
//! Format: the device takes a native-endian `i32` in µs, in force while the file stays open;
//! closing it (or the process dying) withdraws the request. Reading it gives the lowest request
//! in force across the system.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The PM QoS device for the CPU latency limit.
pub const CPU_LATENCY_DEVICE: &str = "/dev/cpu_dma_latency";

/// Holding or reading a CPU latency request failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuLatencyError {
    /// The limit does not fit the device's `i32` of µs.
    #[error("CPU latency limit {0:?} is above the largest the kernel takes ({max} µs)", max = i32::MAX)]
    TooLarge(Duration),
    /// The device could not be opened, written or read.
    #[error("{CPU_LATENCY_DEVICE}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error (`PermissionDenied`: the process may not write the device).
        #[source]
        source: io::Error,
    },
}

fn io_error(op: &'static str) -> impl FnOnce(io::Error) -> CpuLatencyError {
    move |source| CpuLatencyError::Io { op, source }
}

/// A request that no CPU takes longer than `limit` to leave idle, in force until dropped.
#[derive(Debug)]
pub struct CpuLatencyRequest {
    /// Kept open: the request lives as long as this file.
    _device: File,
    limit: Duration,
}

impl CpuLatencyRequest {
    /// Asks the kernel to keep every CPU's wake-up within `limit` (rounded down to µs) until
    /// the request is dropped.
    pub fn hold(limit: Duration) -> Result<Self, CpuLatencyError> {
        let us = i32::try_from(limit.as_micros()).map_err(|_| CpuLatencyError::TooLarge(limit))?;
        let mut device = OpenOptions::new()
            .write(true)
            .open(CPU_LATENCY_DEVICE)
            .map_err(io_error("open for writing"))?;
        // One write of exactly 4 bytes: the kernel reads any other length as a hex string.
        let n = device.write(&us.to_ne_bytes()).map_err(io_error("write"))?;
        if n != 4 {
            return Err(io_error("write")(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("wrote {n} of 4 bytes"),
            )));
        }
        Ok(Self {
            _device: device,
            limit: Duration::from_micros(us as u64),
        })
    }

    /// The limit this request asks for.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// The CPU latency limit in force across the system: the lowest request held by anyone
/// (2000 s when nobody holds one, the kernel's "no limit").
pub fn cpu_latency_limit() -> Result<Duration, CpuLatencyError> {
    let mut device = File::open(CPU_LATENCY_DEVICE).map_err(io_error("open for reading"))?;
    let mut value = [0u8; 4];
    device.read_exact(&mut value).map_err(io_error("read"))?;
    let us = i32::from_ne_bytes(value);
    Ok(Duration::from_micros(u64::try_from(us).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs write access to the device (root in CI): fails, never skips, without it.
    #[test]
    fn a_held_request_lowers_the_system_limit_until_dropped() {
        let before = cpu_latency_limit().expect("reading the limit (needs root)");
        let wanted = Duration::from_micros(7);
        let request = CpuLatencyRequest::hold(wanted).expect("holding a request (needs root)");
        assert_eq!(request.limit(), wanted);
        // Another holder may ask for less; nobody can make the limit exceed ours.
        let held = cpu_latency_limit().expect("reading the limit");
        assert!(
            held <= wanted,
            "limit {held:?} with a request of {wanted:?}"
        );
        drop(request);
        // Above ours again: back to `before`, or to another holder's request if one came
        // meanwhile (the gateway's test holds 13 µs).
        let after = cpu_latency_limit().expect("reading the limit");
        assert!(
            after > wanted,
            "the limit stayed at {after:?} after the request was dropped (before: {before:?})"
        );
    }

    #[test]
    fn a_limit_beyond_the_kernels_range_is_refused_before_the_device_is_opened() {
        let e = CpuLatencyRequest::hold(Duration::from_secs(3000)).unwrap_err();
        assert!(matches!(e, CpuLatencyError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("2147483647 µs"), "{e}");
    }
}
