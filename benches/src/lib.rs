//! Shared helpers for the criterion benches, and the network-namespace throughput harness
//! ([`throughput`], run by the `throughput` binary).

pub mod cpu_time;
pub mod throughput;
