//! The Bulkhead controller: the component that turns a policy written in terms of workload
//! identity into the snapshots that a fleet of gateways enforces, and the `bulkheadctl` command.
//!
//! Gateways only understand addresses. A SmartGroup in a policy may name its members by
//! *selectors* (cloud tags, Kubernetes namespace and labels); the controller resolves those
//! against an [`inventory`] of workloads into host CIDRs, validates and compiles the result once,
//! stores it as the next version and pushes it to every connected gateway over one gRPC stream
//! per gateway (`control-proto`). Gateways answer ACK or NACK and send decision records back.
//!
//! - [`config`]: controller.toml, durations, time stamps.
//! - [`identity`]: mutual TLS and SPIFFE identities (who may do what).
//! - [`certs`]: `bulkheadctl certs`, a lab CA.
//! - [`bundle`]: a policy and its includes as one validated unit.
//! - [`inventory`]: the inventory file format and selector resolution.
//! - [`store`]: durable state behind the [`store::Store`] trait (SQLite today).
//! - [`records`]: decision records from gateways, digested for the report.
//! - [`server`]: the controller itself: sources, versions, fan-out, the two gRPC services.
//! - [`cli`]: the `bulkheadctl` subcommands; `main.rs` only dispatches.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod certs;
pub mod cli;
pub mod config;
pub mod identity;
pub mod inventory;
pub mod records;
pub mod server;
pub mod store;
