//! The Bulkhead spoke gateway.
//!
//! Layers, from the wire up (each module's own `//!` docs say more):
//!
//! - [`wire`]: zero-copy views over IPv4/IPv6/TCP/UDP headers, checksums, and the packets the
//!   gateway builds itself (TCP RST, ICMP unreachable).
//! - [`inspect`]: the protocol parsers that find a name: TLS ClientHello SNI, HTTP Host.
//! - [`capture`]: pcap / pcapng readers that turn captures of any common link type into IP packets.
//! - [`pipeline`]: the sans-IO heart: `process(now, packet) -> actions`, the flow table, TCP
//!   reassembly of the first client bytes, verdicts from the policy engine, expiry.
//! - [`record`]: the decision-log records (OCSF Network Activity) and the sink interface.
//! - [`runtime`], [`sys`], [`routing`], [`config`], [`logsink`], [`metrics`]: the daemon that drives
//!   the pipeline from a real TUN device; [`fastpath`]: hands decided flows to the kernel.
//! - [`sdnotify`]: readiness and watchdog notifications to systemd (`Type=notify`).
//! - [`cli`]: the `bulkhead` subcommands; `main.rs` only parses arguments and dispatches.
//!
//! The network-namespace laboratory behind `bulkhead demo` and the end-to-end tests is a crate of
//! its own, `bulkhead-lab` (`lab/`), so that none of its test and demo code is part of the
//! daemon's modules; `cli::demo` only parses the options and calls it.

pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
pub mod fastpath;
pub mod input;
pub mod inspect;
pub mod logsink;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod routing;
pub mod runtime;
pub mod sdnotify;
pub mod sys;
pub mod wire;
