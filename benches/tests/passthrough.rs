//! The throughput harness's naive TUN forwarder, on a real lab: traffic really crosses the TUN
//! (every ping and every pong is a frame it forwarded), and stopping it removes the device and
//! the routing, so the next set-up of the harness measures what it claims. Root only.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use bulkhead_benches::throughput::passthrough::Passthrough;
use bulkhead_benches::throughput::{pingpong, Interrupt};
use bulkhead_lab::netns;
use bulkhead_lab::{addr, Lab, LabSpec};

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn passthrough_forwards_through_the_tun_and_cleans_up() -> Result<()> {
    if !netns::is_root() {
        eprintln!(
            "SKIPPED passthrough_forwards_through_the_tun_and_cleans_up: it builds network \
             namespaces and a TUN device and needs root"
        );
        return Ok(());
    }
    let lab = Lab::build(&LabSpec::new("bhpass", &["bench"]))?;
    let wl = lab.workload("bench").clone();
    let gw_ns = lab.gateway_netns().to_owned();
    let rules_before = ip(&["-n", &gw_ns, "rule", "show"])?;

    let fwd = Passthrough::start(&lab, 2, Some(0))?;
    assert!(
        ip(&["-n", &gw_ns, "link", "show", "dev", "bulk0"]).is_ok(),
        "the TUN device exists while the forwarder runs"
    );
    let samples = 200;
    let rtts = pingpong::measure(
        &wl.netns,
        lab.internet_netns(),
        IpAddr::V4(addr::SERVER_V4),
        7011,
        samples,
        Duration::from_secs(10),
        &Interrupt::new(),
    )?;
    assert_eq!(rtts.samples, samples);
    let summary = fwd.stop()?;
    let frames: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {summary:?}"));
    // Each round trip is a ping and a pong, each read from the TUN and written back once; the
    // warm-up round trips and the handshake add more.
    assert!(
        frames >= 2 * samples as u64,
        "only {frames} frames crossed the TUN for {samples} round trips: traffic bypassed it"
    );

    assert!(
        ip(&["-n", &gw_ns, "link", "show", "dev", "bulk0"]).is_err(),
        "the TUN device is gone after stop"
    );
    assert_eq!(
        ip(&["-n", &gw_ns, "rule", "show"])?,
        rules_before,
        "the routing rules are back to what they were"
    );
    Ok(())
}
