//! The Bulkhead laboratory: small networks of Linux network namespaces with real servers,
//! real clients and the real `bulkhead` daemon, for demonstrations, end-to-end tests and
//! throughput measurements. It is test and demo code, kept out of the gateway's production
//! modules.
//!
//! Who uses it:
//! - `bulkhead demo` (the gateway's `cli::demo` is a thin wrapper around [`demo`]);
//! - the end-to-end tests of the `bulkhead-tests` package (`tests/`), which drive the `bulkhead`
//!   binary found by [`bins`];
//! - the iperf3 throughput harness of `bulkhead-benches`.
//!
//! The lab does not depend on the gateway crate (the gateway depends on it, for the demo): it
//! runs the gateway as a child process, reads its decision log as JSON and its metrics as
//! Prometheus text, exactly as an operator would.
//!
//! A [`Lab`] is a small network built from network namespaces and veth pairs:
//!
//! ```text
//!  workload "prod"  10.10.1.2 fd00:10:1::2 --eth0==wl0--+
//!  workload "dev"   10.10.2.2 fd00:10:2::2 --eth0==wl1--+-- gateway --up0==eth0-- internet
//!  ...                                                                  10.200.0.10  fd00:200::10
//!                                                                       10.200.0.66  fd00:200::66
//! ```
//!
//! Every namespace name carries a prefix, the process id and a counter, so labs built by tests
//! running in parallel never collide; the addresses only exist inside the namespaces (the same
//! addresses can be reused by every lab because each namespace has its own stack). A workload's
//! default route points at the gateway namespace; the internet namespace routes the workload
//! ranges back through it. The gateway namespace forwards with the kernel until a gateway process
//! ([`gateway::GatewayProcess`]) diverts its interfaces through a TUN device.
//!
//! Everything a lab creates is removed when it is dropped (also while a panic unwinds); labs left
//! behind by a process that was killed are swept by the next [`Lab::build`].
//!
//! Modules:
//! - [`topology`]: namespaces, veth pairs, addresses, routes.
//! - [`netns`]: entering a namespace (`setns(2)`), signals to child processes, the root check.
//! - [`pki`]: a throw-away CA and one certificate per server name (rcgen).
//! - [`servers`]: the TLS, plain HTTP and UDP echo servers of the internet namespace.
//! - [`dns`]: a small DNS server for the internet namespace (the gateway's DNS check).
//! - [`clients`]: the in-process rustls client (X25519MLKEM768 key share), curl,
//!   `openssl s_client`, UDP.
//! - `quic` (feature `quic`): an HTTP/3 server and client on quinn and h3, and headless
//!   Chromium with QUIC forced on.
//! - [`gateway`]: `bulkhead run` as a child process in the gateway namespace, its decision log
//!   and metrics.
//! - [`bins`]: where the `bulkhead` binary under test is.
//! - [`demo`]: what `bulkhead demo` shows.
#![forbid(unsafe_code)]

pub mod bins;
pub mod clients;
pub mod demo;
pub mod dns;
pub mod gateway;
pub mod netns;
pub mod pki;
#[cfg(feature = "quic")]
pub mod quic;
pub mod servers;
pub mod topology;

pub use topology::{emergency_cleanup, Lab, LabSpec, Workload};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the laboratory: failed commands, I/O, TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An external command (`ip`, `sysctl`, ...) failed.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A lab with its servers running: what the demo and every end-to-end test start from.
///
/// Fields drop in declaration order: the servers stop before the namespaces go away.
#[derive(Debug)]
pub struct Testbed {
    pub servers: servers::InternetServers,
    pub pki: pki::Pki,
    /// Client configuration trusting the lab CA, X25519MLKEM768 preferred.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// The lab CA in PEM, for curl and openssl.
    pub ca_path: PathBuf,
    pub lab: Lab,
}

impl Testbed {
    /// Builds the lab, issues a certificate per name and starts the servers (TLS on 443, plain
    /// HTTP on 80, UDP echo on 53 and 5001) in the internet namespace.
    pub fn build(prefix: &str, workloads: &[&str], names: &[&str]) -> Result<Testbed, LabError> {
        let lab = Lab::build(&LabSpec::new(prefix, workloads))?;
        let pki = pki::Pki::generate(names)?;
        let ca_path = lab.workdir().join("ca.pem");
        pki.write_ca(&ca_path)?;
        let client_tls = pki.client_config()?;
        let servers = servers::InternetServers::start(
            lab.internet_netns(),
            &pki,
            &servers::ServerSpec::default(),
        )?;
        Ok(Testbed {
            servers,
            pki,
            client_tls,
            ca_path,
            lab,
        })
    }
}

/// The fixed address plan of every lab. These ranges exist only inside the lab's namespaces.
pub mod addr {
    use super::*;

    /// The main server address of the internet namespace (all TLS names are served here).
    pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);
    /// The main server's IPv6 address.
    pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0x10);
    /// A second address of the internet namespace: the "command and control" host of the demo
    /// and of the address-group tests. The same servers answer on it.
    pub const C2_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 66);
    /// The C2 host's IPv6 address.
    pub const C2_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0x66);
    /// Every address of the internet namespace.
    pub const INTERNET_ADDRESSES: [std::net::IpAddr; 4] = [
        std::net::IpAddr::V4(SERVER_V4),
        std::net::IpAddr::V4(C2_V4),
        std::net::IpAddr::V6(SERVER_V6),
        std::net::IpAddr::V6(C2_V6),
    ];
    /// The gateway's address on the internet side.
    pub const UPLINK_GW_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    /// The gateway's IPv6 address on the internet side.
    pub const UPLINK_GW_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
    /// Prefix length of the internet-side link.
    pub const UPLINK_PREFIX_V4: u8 = 24;
    /// IPv6 prefix length of the internet-side link.
    pub const UPLINK_PREFIX_V6: u8 = 64;

    /// The address of workload `index` (0-based): 10.10.(index+1).2.
    pub fn workload_v4(index: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 10, index.saturating_add(1), 2)
    }
    /// The gateway's address on workload `index`'s link: 10.10.(index+1).1.
    pub fn workload_gw_v4(index: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 10, index.saturating_add(1), 1)
    }
    /// The IPv6 address of workload `index`: fd00:10:(index+1)::2.
    pub fn workload_v6(index: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x10, u16::from(index) + 1, 0, 0, 0, 0, 2)
    }
    /// The gateway's IPv6 address on workload `index`'s link: fd00:10:(index+1)::1.
    pub fn workload_gw_v6(index: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x10, u16::from(index) + 1, 0, 0, 0, 0, 1)
    }
    /// The IPv4 range that holds every workload (routed back by the internet namespace).
    pub const WORKLOADS_V4: &str = "10.10.0.0/16";
    /// The IPv6 range that holds every workload.
    pub const WORKLOADS_V6: &str = "fd00:10::/32";
}

/// The byte at offset `i` of every body the lab's servers send: a pattern with period 251 (a
/// prime, so it never lines up with record or segment sizes), checked by the clients.
pub fn body_byte(i: u64) -> u8 {
    // The remainder is below 251, so the cast cannot truncate.
    ((i.wrapping_mul(7).wrapping_add(13)) % 251) as u8
}

/// Checks that `data`, found at offset `start` of a body, follows [`body_byte`].
pub fn body_matches(start: u64, data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .all(|(k, b)| *b == body_byte(start + k as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_pattern_round_trips_and_detects_corruption() {
        let body: Vec<u8> = (0..10_000u64).map(body_byte).collect();
        assert!(body_matches(0, &body));
        assert!(body_matches(500, &body[500..]));
        let mut bad = body.clone();
        bad[4321] ^= 1;
        assert!(!body_matches(0, &bad));
        // Shifted data does not match: a lost or duplicated segment is detected.
        assert!(!body_matches(0, &body[1..]));
    }

    #[test]
    fn address_plan() {
        assert_eq!(addr::workload_v4(0).to_string(), "10.10.1.2");
        assert_eq!(addr::workload_gw_v4(1).to_string(), "10.10.2.1");
        assert_eq!(addr::workload_v6(1).to_string(), "fd00:10:2::2");
        assert_eq!(addr::SERVER_V6.to_string(), "fd00:200::10");
    }
}
