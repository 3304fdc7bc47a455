//! Shared helpers of the end-to-end tests (`e2e_*.rs`): root check, the lab's names, waiting.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bulkhead_gateway::netlab::{addr, Testbed};
use bulkhead_gateway::sys::netns;

/// Names the lab's TLS server has certificates for (all on one address).
pub const NAMES: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "exfil.example.net",
    "watch.example.org",
];

/// True when the tests can build namespaces; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if netns::is_root() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: end-to-end tests build network namespaces and need root \
         (run `sudo -E cargo test -p bulkhead-gateway --test 'e2e_*'`)"
    );
    false
}

/// Builds a testbed with workloads `prod` and `dev`.
pub fn testbed() -> Testbed {
    Testbed::build("bhtest", &["prod", "dev"], NAMES).expect("build the lab")
}

pub fn server_v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr::SERVER_V4), port)
}

pub fn server_v6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(addr::SERVER_V6), port)
}

pub fn c2_v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr::C2_V4), port)
}

/// Polls `f` every 10 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
