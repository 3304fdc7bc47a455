//! End-to-end: live policy updates (SIGHUP). New connections follow the new policy at once, and
//! a long-lived transfer that the new policy denies is cut within a second and logged with
//! reason `policy_update`. A bad policy file is refused and the old one stays. Root only.

use std::time::{Duration, Instant};

use anyhow::Result;
use bulkhead_lab::clients::{self, Outcome, Request, StreamWatch};
use bulkhead_lab::gateway::metric_value;
use bulkhead_lab::netns::Signal;
use bulkhead_tests::e2e::*;

const ALLOW: &str = r#"
[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true
"#;

/// The update that denies the name.
const DENY_NAME: &str = r#"
[[rules]]
name = "incident-deny-openai"
priority = 5
src = ["any"]
dst = ["openai"]
protocol = "tcp"
action = "deny"

[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true
"#;

/// The update that puts the server's address on a blocklist.
const BLOCK_ADDRESS: &str = r#"
[addressgroups.incident]
cidrs = ["10.200.0.10/32", "fd00:200::10/128"]

[[rules]]
name = "incident-block-address"
priority = 5
src = ["any"]
dst = ["incident"]
protocol = "any"
action = "deny"

[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true
"#;

fn cut_open_transfer(update: &str, cutting_rule: &str) -> Result<()> {
    let tb = testbed();
    let gw = start_gateway(&tb, &policy("enforce", ALLOW));
    let prod = tb.lab.workload("prod").netns.clone();
    let stream = StreamWatch::open(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/stream"),
    )?;
    assert!(
        stream.wait_bytes(50_000, Duration::from_secs(10)),
        "the stream should flow first: {} bytes, end {:?}\n{}",
        stream.bytes(),
        stream.ended(),
        gw.output()
    );
    let before = gw.records()?.len();
    let sent = Instant::now();
    gw.reload(update)?;
    let (outcome, at) = stream.wait_end(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "the open transfer was not cut; gateway output:\n{}",
            gw.output()
        )
    });
    let took = at.duration_since(sent);
    assert_eq!(outcome, Outcome::Reset, "the transfer ends with a reset");
    assert!(took < Duration::from_secs(1), "cut {took:?} after SIGHUP");
    assert!(stream.intact(), "the bytes before the cut were intact");
    eprintln!(
        "open transfer cut {took:?} after SIGHUP ({} bytes received)",
        stream.bytes()
    );

    let local = stream.local().expect("connected");
    let r = gw
        .wait_record(Duration::from_secs(5), |r| {
            src_is(r, local) && r["reason"].as_str() == Some("policy_update")
        })
        .unwrap_or_else(|| {
            panic!(
                "no policy_update record: {:#?}",
                &gw.records().unwrap_or_default()[before..]
            )
        });
    assert_eq!(r["action"].as_str(), Some("Denied"), "{r:#}");
    assert_eq!(r["disposition"].as_str(), Some("Blocked"), "{r:#}");
    assert_eq!(r["policy"]["name"].as_str(), Some(cutting_rule), "{r:#}");
    assert_eq!(
        r["dst_endpoint"]["hostname"].as_str(),
        Some("api.openai.com"),
        "{r:#}"
    );

    // New connections are denied (silently) under the new policy.
    let ex = clients::fetch(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/")
            .timeout(Duration::from_secs(2)),
    )?;
    assert_eq!(ex.outcome, Outcome::TimedOut, "{ex:?}");
    let metrics = gw.metrics()?;
    assert!(
        metric_value(&metrics, "bulkhead_policy_version", &[]).unwrap_or(0.0) >= 2.0,
        "{metrics}"
    );
    Ok(())
}

#[test]
fn sighup_denying_the_name_cuts_the_open_transfer() -> Result<()> {
    if !root_or_skip("sighup_denying_the_name_cuts_the_open_transfer") {
        return Ok(());
    }
    cut_open_transfer(&policy("enforce", DENY_NAME), "incident-deny-openai")
}

#[test]
fn sighup_blocklisting_the_address_cuts_the_open_transfer() -> Result<()> {
    if !root_or_skip("sighup_blocklisting_the_address_cuts_the_open_transfer") {
        return Ok(());
    }
    cut_open_transfer(&policy("enforce", BLOCK_ADDRESS), "incident-block-address")
}

/// A policy file with errors is refused on SIGHUP: the old policy stays in force, open
/// transfers go on, and the failure is counted.
#[test]
fn sighup_with_a_bad_policy_keeps_the_old_one() -> Result<()> {
    if !root_or_skip("sighup_with_a_bad_policy_keeps_the_old_one") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start_gateway(&tb, &policy("enforce", ALLOW));
    let prod = tb.lab.workload("prod").netns.clone();
    let stream = StreamWatch::open(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/stream"),
    )?;
    assert!(stream.wait_bytes(20_000, Duration::from_secs(10)));
    let version = metric_value(&gw.metrics()?, "bulkhead_policy_version", &[]);
    assert!(version.is_some());
    gw.reload("[policy]\ndefault_action = \"sometimes\"\n[[rules]]\nname = 3\n")?;
    let failures = wait_for(Duration::from_secs(5), || {
        let m = gw.metrics().ok()?;
        metric_value(&m, "bulkhead_policy_reload_failures_total", &[]).filter(|v| *v >= 1.0)
    });
    assert!(failures.is_some(), "the failed reload is counted");
    let b = stream.bytes();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        stream.ended().is_none() && stream.bytes() > b,
        "the transfer goes on"
    );
    let ex = clients::fetch(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/"),
    )?;
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    let metrics = gw.metrics()?;
    assert_eq!(
        metric_value(&metrics, "bulkhead_policy_version", &[]),
        version,
        "{metrics}"
    );
    // And SIGTERM stops the gateway cleanly, removing its routing.
    drop(stream);
    let mut gw = gw;
    gw.signal(Signal::Term)?;
    let status = gw.stop(Duration::from_secs(10))?;
    assert!(status.success(), "{status}: {}", gw.output());
    let rules = tb
        .lab
        .command(tb.lab.gateway_netns(), "ip")
        .args(["rule", "show"])
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains("lookup 100"),
        "diversion rules removed: {rules}"
    );
    Ok(())
}
