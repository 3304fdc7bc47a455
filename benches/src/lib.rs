//! Shared helpers for the benches.

pub mod cpu_time;
pub mod synthetic;
