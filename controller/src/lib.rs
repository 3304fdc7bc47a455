//! The Bulkhead controller: the component that turns a policy written in terms of workload
//! identity into the snapshots that gateways enforce.
//!
//! Gateways only understand addresses. A SmartGroup in a policy may name its members by
//! *selectors* (cloud tags, Kubernetes namespace and labels); the controller resolves those
//! against an [`inventory`] of workloads, written by a sync job from cloud APIs or Kubernetes, into
//! host CIDRs before a snapshot is pushed (see `control-proto`).
//!
//! - [`inventory`]: the inventory file format, its loading and validation, and selector
//!   resolution.
#![forbid(unsafe_code)]

pub mod inventory;
