//! PLC adapters for edge-gateway (placeholder until the Modbus issue lands).
#![forbid(unsafe_code)]
