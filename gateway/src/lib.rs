//! edge-gateway daemon library.
#![forbid(unsafe_code)]
