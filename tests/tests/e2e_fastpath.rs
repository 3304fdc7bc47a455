//! End-to-end: the kernel fast path with the real daemon in namespaces. A permitted TLS
//! download leaves the TUN after its handshake (its bytes are in the flow-end record, the TUN
//! counters stay near the handshake's size); a SIGHUP that denies a handed-off transfer cuts it
//! within a second; a plain-HTTP transfer under the request watch stays on the TUN; with the fast
//! path off, everything crosses the TUN as before; nothing is left behind after exit. Root only.

use std::time::{Duration, Instant};

use anyhow::Result;
use bulkhead_lab::clients::{self, Outcome, Request, StreamWatch};
use bulkhead_lab::gateway::{metric_value, GatewayProcess, GatewaySpec};
use bulkhead_lab::netns::Signal;
use bulkhead_lab::Testbed;
use bulkhead_tests::e2e::*;

const RULES: &str = r#"
[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true

[[rules]]
name = "prod-to-plain"
priority = 110
src = ["prod-agents"]
dst = ["plain-ok"]
protocol = "tcp"
ports = ["80"]
action = "permit"
log = true
"#;

const DENY_NAME: &str = r#"
[[rules]]
name = "incident-deny-openai"
priority = 5
src = ["any"]
dst = ["openai"]
protocol = "tcp"
action = "deny"
"#;

/// Bytes of the download: large against what a TLS handshake costs (a few KB).
const DOWNLOAD: u64 = 30 << 20;

fn metric(gw: &GatewayProcess, name: &str) -> f64 {
    let m = gw.metrics().unwrap_or_default();
    metric_value(&m, name, &[]).unwrap_or(0.0)
}

/// Whether this kernel (namespace) can run the fast path, as the gateway found at start.
fn fast_path_supported(gw: &GatewayProcess) -> bool {
    metric(gw, "bulkhead_fastpath_supported") >= 1.0
}

fn start(tb: &Testbed, fast_path: Option<bool>, rules: &str) -> GatewayProcess {
    let mut spec = GatewaySpec::new(bulkhead_bin(), &policy("enforce", rules));
    spec.fast_path = fast_path;
    start_gateway_with(tb, spec)
}

fn download(tb: &Testbed) -> Result<clients::Exchange> {
    let prod = tb.lab.workload("prod").netns.clone();
    let ex = clients::fetch(
        &prod,
        Request::https(
            &tb.client_tls,
            server_v4(443),
            "api.openai.com",
            &format!("/bytes/{DOWNLOAD}"),
        )
        .timeout(Duration::from_secs(60)),
    )?;
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    assert_eq!(ex.body_len, DOWNLOAD, "{ex:?}");
    assert!(ex.body_intact, "{ex:?}");
    Ok(ex)
}

#[test]
fn a_permitted_tls_download_leaves_the_tun_and_its_bytes_are_recorded() -> Result<()> {
    if !root_or_skip("a_permitted_tls_download_leaves_the_tun_and_its_bytes_are_recorded") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start(&tb, None, RULES);
    if !fast_path_supported(&gw) {
        eprintln!(
            "SKIPPED a_permitted_tls_download_leaves_the_tun_and_its_bytes_are_recorded: the \
             gateway found no fast-path support in this kernel (nftables, ctnetlink, conntrack \
             accounting); its log says why:\n{}",
            gw.output()
        );
        return Ok(());
    }
    let tun_before = metric(&gw, "bulkhead_bytes_forwarded_total")
        + metric(&gw, "bulkhead_bytes_transmitted_total");
    let tap = Tap::start(&tb.lab.workload("prod").netns);
    let started = Instant::now();
    let ex = download(&tb)?;
    let took = started.elapsed();
    let local = ex.local.expect("connected");
    let end = wait_flow_record(&gw, local, &[2], Duration::from_secs(15));
    let bytes_in = end["traffic"]["bytes_in"].as_u64().unwrap_or(0);
    assert!(
        bytes_in >= DOWNLOAD,
        "the flow-end record counts the kernel's bytes too: {end:#}"
    );
    // Against what crossed the workload's interface: conntrack's counts (less what the TUN saw
    // twice) may differ by a packet of the handshake.
    let (bo, po, bi, pi) = tap_traffic(&tap.stop(), local, server_v4(443));
    let t = &end["traffic"];
    let near = |got: &serde_json::Value, want: u64, slack: u64| {
        got.as_u64().is_some_and(|g| g.abs_diff(want) <= slack)
    };
    assert!(
        near(&t["bytes_out"], bo, 200)
            && near(&t["packets_out"], po, 2)
            && near(&t["bytes_in"], bi, 200)
            && near(&t["packets_in"], pi, 2),
        "record {t} against the capture: out {bo} B / {po} packets, in {bi} B / {pi} packets"
    );
    assert_eq!(end["end_reason"].as_str(), Some("fin"), "{end:#}");
    // Published at least every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let tun = metric(&gw, "bulkhead_bytes_forwarded_total")
        + metric(&gw, "bulkhead_bytes_transmitted_total")
        - tun_before;
    assert!(
        tun < 1_000_000.0,
        "the TUN saw {tun} bytes of a {DOWNLOAD}-byte download: it should see about the handshake"
    );
    assert!(metric(&gw, "bulkhead_fastpath_handed_off_total") >= 1.0);
    assert!(metric(&gw, "bulkhead_fastpath_ended_total") >= 1.0);
    eprintln!(
        "fast path: {DOWNLOAD} bytes in {took:?}; the TUN carried {tun} bytes; record: {}",
        end["traffic"]
    );

    // Stopped, it leaves nothing behind: no mark rules, no nftables table.
    let mut gw = gw;
    gw.signal(Signal::Term)?;
    let status = gw.stop(Duration::from_secs(10))?;
    assert!(status.success(), "{status}: {}", gw.output());
    let ns = tb.lab.gateway_netns();
    for family in ["-4", "-6"] {
        let out = tb
            .lab
            .command(ns, "ip")
            .args([family, "rule", "show"])
            .output()?;
        let rules = String::from_utf8_lossy(&out.stdout);
        assert!(
            !rules.contains("fwmark") && !rules.contains("lookup 100"),
            "rules left behind: {rules}"
        );
    }
    match tb.lab.command(ns, "nft").args(["list", "tables"]).output() {
        Ok(out) if out.status.success() => {
            let tables = String::from_utf8_lossy(&out.stdout);
            assert!(!tables.contains("bulkhead"), "table left behind: {tables}");
        }
        _ => eprintln!("nft is not installed: the table check after exit is skipped"),
    }
    Ok(())
}

#[test]
fn sighup_cuts_a_handed_off_transfer_within_a_second() -> Result<()> {
    if !root_or_skip("sighup_cuts_a_handed_off_transfer_within_a_second") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start(&tb, None, RULES);
    if !fast_path_supported(&gw) {
        eprintln!(
            "SKIPPED sighup_cuts_a_handed_off_transfer_within_a_second: no fast-path support \
             in this kernel:\n{}",
            gw.output()
        );
        return Ok(());
    }
    let prod = tb.lab.workload("prod").netns.clone();
    let stream = StreamWatch::open(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/stream"),
    )?;
    assert!(stream.wait_bytes(50_000, Duration::from_secs(10)));
    let handed = wait_for(Duration::from_secs(5), || {
        (metric(&gw, "bulkhead_fastpath_active") >= 1.0).then_some(())
    });
    assert!(
        handed.is_some(),
        "the stream was handed off:\n{}",
        gw.output()
    );
    let sent = Instant::now();
    gw.reload(&policy("enforce", &format!("{DENY_NAME}\n{RULES}")))?;
    let (outcome, at) = stream
        .wait_end(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the transfer was not cut:\n{}", gw.output()));
    let took = at.duration_since(sent);
    assert_eq!(outcome, Outcome::Reset);
    assert!(took < Duration::from_secs(1), "cut {took:?} after SIGHUP");
    assert!(stream.intact());
    let local = stream.local().expect("connected");
    let cut = gw
        .wait_record(Duration::from_secs(5), |r| {
            src_is(r, local) && r["reason"].as_str() == Some("policy_update")
        })
        .expect("a policy_update record");
    assert_eq!(cut["disposition"].as_str(), Some("Blocked"), "{cut:#}");
    let end = wait_flow_record(&gw, local, &[2], Duration::from_secs(5));
    assert!(
        end["traffic"]["bytes_in"].as_u64().unwrap_or(0) >= stream.bytes(),
        "the flow-end record has the kernel's bytes: {end:#} (client read {})",
        stream.bytes()
    );
    assert!(metric(&gw, "bulkhead_fastpath_taken_back_total") >= 1.0);
    eprintln!("handed-off transfer cut {took:?} after SIGHUP");
    Ok(())
}

#[test]
fn a_watched_plain_http_transfer_stays_on_the_tun() -> Result<()> {
    if !root_or_skip("a_watched_plain_http_transfer_stays_on_the_tun") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start(&tb, None, RULES);
    let prod = tb.lab.workload("prod").netns.clone();
    let stream = StreamWatch::open(
        &prod,
        Request::http(server_v4(80), "ok.example.com", "/stream"),
    )?;
    assert!(
        stream.wait_bytes(100_000, Duration::from_secs(10)),
        "{}",
        gw.output()
    );
    std::thread::sleep(Duration::from_millis(300));
    let tun = metric(&gw, "bulkhead_bytes_forwarded_total");
    assert!(
        tun >= stream.bytes() as f64,
        "the TUN carried {tun} bytes, the client read {}",
        stream.bytes()
    );
    assert_eq!(metric(&gw, "bulkhead_fastpath_handed_off_total"), 0.0);
    assert!(stream.ended().is_none());
    Ok(())
}

#[test]
fn with_the_fast_path_off_everything_crosses_the_tun() -> Result<()> {
    if !root_or_skip("with_the_fast_path_off_everything_crosses_the_tun") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start(&tb, Some(false), RULES);
    assert_eq!(metric(&gw, "bulkhead_fastpath_supported"), 0.0);
    let ex = download(&tb)?;
    let end = wait_flow_record(
        &gw,
        ex.local.expect("connected"),
        &[2],
        Duration::from_secs(10),
    );
    assert!(
        end["traffic"]["bytes_in"].as_u64().unwrap_or(0) >= DOWNLOAD,
        "{end:#}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(metric(&gw, "bulkhead_bytes_forwarded_total") >= DOWNLOAD as f64);
    assert_eq!(metric(&gw, "bulkhead_fastpath_handed_off_total"), 0.0);
    let out = tb
        .lab
        .command(tb.lab.gateway_netns(), "ip")
        .args(["rule", "show"])
        .output()?;
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("fwmark"),
        "no mark rules without the fast path"
    );
    Ok(())
}

/// A gateway killed with a handed-off transfer: the kernel removes the fast path's table with the
/// process (it belongs to the gateway's netlink socket), so the transfer stops instead of going on
/// uninspected; the next start clears the leftover conntrack mark and installs everything once,
/// and the old transfer, now unknown to the gateway and needing a name, fails closed.
#[test]
fn a_killed_gateway_leaves_no_flow_bypassing_the_tun() -> Result<()> {
    if !root_or_skip("a_killed_gateway_leaves_no_flow_bypassing_the_tun") {
        return Ok(());
    }
    let tb = testbed();
    let mut gw = start(&tb, None, RULES);
    if !fast_path_supported(&gw) {
        eprintln!(
            "SKIPPED a_killed_gateway_leaves_no_flow_bypassing_the_tun: no fast-path support in \
             this kernel:\n{}",
            gw.output()
        );
        return Ok(());
    }
    let prod = tb.lab.workload("prod").netns.clone();
    let stream = StreamWatch::open(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/stream"),
    )?;
    assert!(stream.wait_bytes(50_000, Duration::from_secs(10)));
    let handed = wait_for(Duration::from_secs(5), || {
        (metric(&gw, "bulkhead_fastpath_active") >= 1.0).then_some(())
    });
    assert!(
        handed.is_some(),
        "the stream was handed off:\n{}",
        gw.output()
    );
    gw.signal(Signal::Kill)?;
    let _ = gw.stop(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let stalled = stream.bytes();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        stream.bytes(),
        stalled,
        "with the gateway dead, the handed-off transfer must not go on"
    );
    let ns = tb.lab.gateway_netns();
    if let Ok(out) = tb.lab.command(ns, "nft").args(["list", "tables"]).output() {
        if out.status.success() {
            let tables = String::from_utf8_lossy(&out.stdout);
            assert!(
                !tables.contains("bulkhead"),
                "the kernel removed the table with the process: {tables}"
            );
        }
    }

    let gw = start(&tb, None, RULES);
    assert!(fast_path_supported(&gw), "{}", gw.output());
    for family in ["-4", "-6"] {
        let out = tb
            .lab
            .command(ns, "ip")
            .args([family, "rule", "show"])
            .output()?;
        let rules = String::from_utf8_lossy(&out.stdout).to_string();
        let marks: Vec<&str> = rules.lines().filter(|l| l.contains("fwmark")).collect();
        let unique: std::collections::BTreeSet<&str> = marks.iter().copied().collect();
        assert_eq!(marks.len(), unique.len(), "duplicated rules: {rules}");
        assert_eq!(
            marks.len(),
            tb.lab.gateway_interfaces().len(),
            "one mark rule per interface: {rules}"
        );
    }
    // The old transfer's packets reach the TUN again: a flow the gateway does not know, whose
    // verdict needs a name. The client only acknowledges and the server's data cannot anchor a
    // name, so its packets are dropped (`midstream`) until client data decides, and nothing
    // more reaches the client.
    let dropped = wait_for(Duration::from_secs(20), || {
        let m = gw.metrics().unwrap_or_default();
        (metric_value(
            &m,
            "bulkhead_packets_dropped_total",
            &[("reason", "midstream")],
        )
        .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });
    assert!(
        dropped.is_some(),
        "the old transfer came back to the TUN and was dropped as midstream:\n{}",
        gw.output()
    );
    assert_eq!(
        stream.bytes(),
        stalled,
        "no byte of it passed after the restart"
    );
    assert!(
        gw.output().contains("cleared the mark"),
        "the restart cleared the leftover mark:\n{}",
        gw.output()
    );
    Ok(())
}
