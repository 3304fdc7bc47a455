//! End-to-end: a bounded SYN flood from one workload (raw socket, a few seconds) against a
//! gateway with a small flow table. Established transfers from another workload keep flowing,
//! the gateway's memory stays bounded, the flow-limit counter moves, and once the flood stops
//! new connections get in again within seconds (stale half-open flows are evicted). Root only.

use std::time::Duration;

use anyhow::Result;
use bulkhead_lab::clients::{self, Outcome, Request, StreamWatch};
use bulkhead_lab::gateway::{metric_value, GatewaySpec};
use bulkhead_tests::e2e::*;

/// A flow table this small fills within a fraction of the flood.
const FLOW_CAPACITY: usize = 2048;

const RULES: &str = r#"
[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"

[[rules]]
name = "dev-to-openai"
priority = 110
src = ["dev"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

#[test]
fn syn_flood_leaves_established_transfers_working() -> Result<()> {
    if !root_or_skip("syn_flood_leaves_established_transfers_working") {
        return Ok(());
    }
    let tb = testbed();
    let mut spec = GatewaySpec::new(bulkhead_bin(), &policy("enforce", RULES));
    spec.extra_toml = format!("[limits]\nflow_capacity = {FLOW_CAPACITY}\n");
    let gw = start_gateway_with(&tb, spec);
    let prod = tb.lab.workload("prod").netns.clone();
    let dev = tb.lab.workload("dev").clone();

    let stream = StreamWatch::open(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/stream"),
    )?;
    assert!(
        stream.wait_bytes(20_000, Duration::from_secs(10)),
        "stream did not start"
    );
    let rss_before = gw.rss_kib().expect("gateway RSS");
    let bytes_before = stream.bytes();

    let flood_ns = dev.netns.clone();
    let flood =
        std::thread::spawn(move || syn_flood(&flood_ns, dev.v4, 30_000, Duration::from_secs(3)));
    let mut rss_peak = rss_before;
    while !flood.is_finished() {
        rss_peak = rss_peak.max(gw.rss_kib().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = flood.join().expect("flood thread")?;
    let bytes_during = stream.bytes() - bytes_before;
    rss_peak = rss_peak.max(gw.rss_kib().unwrap_or(0));

    let metrics = gw.metrics()?;
    let flow_limit_drops = metric_value(
        &metrics,
        "bulkhead_packets_dropped_total",
        &[("reason", "flow_limit")],
    )
    .unwrap_or(0.0);
    let flow_limit_decisions = metric_value(
        &metrics,
        "bulkhead_decisions_total",
        &[("reason", "flow_limit")],
    )
    .unwrap_or(0.0);
    let evictions = metric_value(&metrics, "bulkhead_flow_evictions_total", &[]).unwrap_or(0.0);
    let active = metric_value(&metrics, "bulkhead_flows_active", &[]).unwrap_or(-1.0);
    eprintln!(
        "flood: {sent} SYNs; stream +{bytes_during} bytes during the flood; RSS {rss_before} -> peak {rss_peak} KiB; \
         flow_limit drops {flow_limit_drops}, flow_limit decisions {flow_limit_decisions}, evictions {evictions}, active flows {active}"
    );
    assert!(
        sent >= 2 * FLOW_CAPACITY as u32,
        "the flood sent only {sent} SYNs"
    );
    assert!(
        stream.ended().is_none(),
        "the established transfer survived: {:?}",
        stream.ended()
    );
    assert!(stream.intact());
    // 100 KB/s nominal for about three seconds.
    assert!(
        bytes_during >= 100_000,
        "the established transfer kept flowing: {bytes_during} bytes"
    );
    let b = stream.bytes();
    assert!(
        stream.wait_bytes(b + 20_000, Duration::from_secs(2)),
        "and still flows"
    );
    assert!(
        flow_limit_drops + flow_limit_decisions > 0.0,
        "the flow-limit counter moved:\n{metrics}"
    );
    assert!(
        active <= FLOW_CAPACITY as f64,
        "active flows {active} within the capacity"
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < 64 * 1024,
        "gateway memory grew from {rss_before} to {rss_peak} KiB"
    );

    // Once the flood stops, its unanswered SYNs become evictable after a second: a new
    // connection from the flooding workload itself gets in without waiting for the opening
    // timeout (30 s) to clear the table.
    let started = std::time::Instant::now();
    let recovered = wait_for(Duration::from_secs(5), || {
        let ex = clients::fetch(
            &dev.netns,
            Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/")
                .timeout(Duration::from_secs(1)),
        )
        .ok()?;
        (ex.outcome == Outcome::Completed).then_some(ex)
    });
    assert!(
        recovered.is_some(),
        "no new connection got through within 5 s of the flood's end"
    );
    let metrics = gw.metrics()?;
    let evictions_after =
        metric_value(&metrics, "bulkhead_flow_evictions_total", &[]).unwrap_or(0.0);
    eprintln!(
        "recovery: a new connection completed {:?} after the flood; evictions {evictions_after}",
        started.elapsed()
    );
    assert!(
        evictions_after > 0.0,
        "the new connection got its slot by evicting a stale half-open flow"
    );

    Ok(())
}
