//! Shared helpers for the benches, and the network-namespace throughput harness
//! ([`throughput`], run by the `throughput` binary).
pub mod throughput;
