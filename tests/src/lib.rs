//! Shared launchers for the integration tests against real peers.
#![forbid(unsafe_code)]
