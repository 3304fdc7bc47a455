//! End-to-end: the DNS check of names (`sni_dns_check`) with the real `bulkhead run`, a real DNS
//! server in the lab's internet namespace (`bulkhead_lab::dns`, over UDP) and real TLS clients.
//! The same ClientHello goes to the name's real address and to another address of the internet
//! namespace (which serves the same certificates, as an attacker's host would after stealing
//! nothing but the name). Root only.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use bulkhead_lab::clients::{self, Exchange, Outcome, Request};
use bulkhead_lab::dns::{DnsServer, DNS_PORT};
use bulkhead_lab::gateway::{metric_value, GatewayProcess, GatewaySpec};
use bulkhead_lab::{addr, Testbed};
use bulkhead_tests::e2e::*;
use serde_json::Value;

const T_CLIENT: Duration = Duration::from_secs(4);
const T_RECORD: Duration = Duration::from_secs(10);

const RULES: &str = r#"
[webgroups.openai-any]
domains = ["*.openai.com"]

[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai", "openai-any"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true

[[rules]]
name = "prod-to-anthropic"
priority = 110
src = ["prod-agents"]
dst = ["anthropic"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true
"#;

fn dns_policy(check: &str) -> String {
    policy("enforce", RULES).replacen(
        "mode = \"enforce\"\n",
        &format!("mode = \"enforce\"\nsni_dns_check = \"{check}\"\n"),
        1,
    )
}

fn real() -> SocketAddr {
    server_v4(443)
}

fn other() -> SocketAddr {
    c2_v4(443)
}

struct Setup {
    tb: Testbed,
    dns: DnsServer,
    gw: GatewayProcess,
}

fn setup(check: &str, extra_dns: &str) -> Setup {
    let tb = testbed();
    let dns = DnsServer::start(
        tb.lab.internet_netns(),
        SocketAddr::new(IpAddr::V4(addr::SERVER_V4), DNS_PORT),
    )
    .expect("start the DNS server");
    dns.state()
        .set("api.openai.com", &[IpAddr::V4(addr::SERVER_V4)], 300);
    let mut spec = GatewaySpec::new(bulkhead_bin(), &dns_policy(check));
    spec.extra_toml = format!(
        "[dns]\nservers = [\"{}:{DNS_PORT}\"]\nmin_ttl_s = 1\ntimeout_ms = 400\nattempts = 1\n{extra_dns}\n",
        addr::SERVER_V4
    );
    let gw = start_gateway_with(&tb, spec);
    Setup { tb, dns, gw }
}

fn https(s: &Setup, server: SocketAddr, name: &str) -> Exchange {
    clients::fetch(
        &s.tb.lab.workload("prod").netns,
        Request::https(&s.tb.client_tls, server, name, "/").timeout(T_CLIENT),
    )
    .expect("run the client")
}

/// The decision record of the flow from `ex`'s client whose reason is `reason`.
fn record_with_reason(gw: &GatewayProcess, ex: &Exchange, reason: &str) -> Value {
    let local = ex.local.expect("the client's address");
    gw.wait_record(T_RECORD, |r| {
        src_is(r, local) && r["reason"].as_str() == Some(reason) && r["activity_id"] != 2
    })
    .unwrap_or_else(|| {
        panic!(
            "no {reason} record for {local}; records: {:#?}\ngateway output:\n{}",
            gw.records().unwrap_or_default(),
            gw.output()
        )
    })
}

fn resolved(r: &Value) -> Vec<String> {
    r["dns_check"]["resolved"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn enforce_passes_the_real_address_and_refuses_another() -> Result<()> {
    if !root_or_skip("enforce_passes_the_real_address_and_refuses_another") {
        return Ok(());
    }
    let s = setup("enforce", "");
    let ok = https(&s, real(), "api.openai.com");
    assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}\n{}", s.gw.output());
    assert_eq!(ok.served_name.as_deref(), Some("api.openai.com"));
    let asked = s.dns.state().queries();
    assert!(asked >= 1, "the gateway asked the lab's resolver");
    // The same hello to another address: refused, the record says why.
    let spoof = https(&s, other(), "api.openai.com");
    assert!(!spoof.tls_established, "{spoof:?}");
    assert_eq!(spoof.status, None);
    let r = record_with_reason(&s.gw, &spoof, "sni_address_mismatch");
    assert_eq!(r["disposition"], "Blocked", "{r:#}");
    assert_eq!(r["action"], "Denied", "{r:#}");
    assert_eq!(r["dns_check"]["name"], "api.openai.com", "{r:#}");
    assert_eq!(r["dns_check"]["address"], addr::C2_V4.to_string(), "{r:#}");
    assert_eq!(resolved(&r), vec![addr::SERVER_V4.to_string()], "{r:#}");
    // One lookup served both (the second flow was decided from the cache, without a wait).
    assert_eq!(s.dns.state().queries(), asked);
    // The workers publish their counters every 100 ms or so, after the record is written.
    let hit = wait_for(Duration::from_secs(5), || {
        let m = s.gw.metrics().ok()?;
        let hits = metric_value(
            &m,
            "bulkhead_dns_check_events_total",
            &[("event", "cache_hit")],
        );
        (hits == Some(1.0)).then_some(())
    });
    assert!(
        hit.is_some(),
        "one cache hit counted:\n{}",
        s.gw.metrics().unwrap_or_default()
    );
    Ok(())
}

#[test]
fn log_mode_lets_a_mismatch_through_and_records_it_as_detected() -> Result<()> {
    if !root_or_skip("log_mode_lets_a_mismatch_through_and_records_it_as_detected") {
        return Ok(());
    }
    let s = setup("log", "");
    let spoof = https(&s, other(), "api.openai.com");
    assert_eq!(spoof.outcome, Outcome::Completed, "{spoof:?}");
    let r = record_with_reason(&s.gw, &spoof, "sni_address_mismatch");
    assert_eq!(r["disposition"], "Detected", "{r:#}");
    assert_eq!(r["dns_check"]["mode"], "log", "{r:#}");
    assert_eq!(resolved(&r), vec![addr::SERVER_V4.to_string()], "{r:#}");
    Ok(())
}

#[test]
fn an_expired_answer_is_asked_again_and_the_new_one_decides() -> Result<()> {
    if !root_or_skip("an_expired_answer_is_asked_again_and_the_new_one_decides") {
        return Ok(());
    }
    let s = setup("enforce", "");
    s.dns
        .state()
        .set("api.openai.com", &[IpAddr::V4(addr::SERVER_V4)], 1);
    let first = https(&s, real(), "api.openai.com");
    assert_eq!(first.outcome, Outcome::Completed, "{first:?}");
    let asked = s.dns.state().queries();
    // The name moves to the other address; once the 1 s TTL ran out the gateway asks again.
    s.dns
        .state()
        .set("api.openai.com", &[IpAddr::V4(addr::C2_V4)], 1);
    std::thread::sleep(Duration::from_millis(1500));
    let moved = https(&s, other(), "api.openai.com");
    assert_eq!(
        moved.outcome,
        Outcome::Completed,
        "{moved:?}\n{}",
        s.gw.output()
    );
    assert!(
        s.dns.state().queries() > asked,
        "the name was resolved again"
    );
    let old = https(&s, real(), "api.openai.com");
    assert!(!old.tls_established, "the old address expired: {old:?}");
    record_with_reason(&s.gw, &old, "sni_address_mismatch");
    Ok(())
}

#[test]
fn a_resolver_that_does_not_answer_fails_closed() -> Result<()> {
    if !root_or_skip("a_resolver_that_does_not_answer_fails_closed") {
        return Ok(());
    }
    let s = setup("enforce", "");
    s.dns
        .state()
        .set("api.anthropic.com", &[IpAddr::V4(addr::SERVER_V4)], 300);
    s.dns.state().set_silent(true);
    let ex = https(&s, real(), "api.anthropic.com");
    assert!(!ex.tls_established, "{ex:?}");
    let local = ex.local.expect("client address");
    let r =
        s.gw.wait_record(T_RECORD, |r| {
            src_is(r, local)
                && matches!(
                    r["reason"].as_str(),
                    Some("sni_dns_timeout") | Some("sni_dns_failure")
                )
        })
        .unwrap_or_else(|| panic!("no DNS failure record: {:#?}", s.gw.records()));
    assert_eq!(r["disposition"], "Blocked", "{r:#}");
    assert_eq!(r["dst_endpoint"]["hostname"], "api.anthropic.com", "{r:#}");
    // The resolver is back: the next connection passes.
    s.dns.state().set_silent(false);
    let ok = https(&s, real(), "api.anthropic.com");
    assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}");
    Ok(())
}

#[test]
fn a_flood_of_names_stays_within_the_query_and_cache_bounds() -> Result<()> {
    if !root_or_skip("a_flood_of_names_stays_within_the_query_and_cache_bounds") {
        return Ok(());
    }
    let s = setup("enforce", "max_in_flight = 4\ncache_size = 64\n");
    const N: usize = 48;
    for i in 0..N {
        s.dns.state().set(
            &format!("n{i}.openai.com"),
            &[IpAddr::V4(addr::SERVER_V4)],
            300,
        );
    }
    // Answers take a while, so that lookups pile up.
    s.dns.state().set_delay(Duration::from_millis(300));
    let ns = s.tb.lab.workload("prod").netns.clone();
    let tls = s.tb.client_tls.clone();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let ns = ns.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                clients::fetch(
                    &ns,
                    Request::https(&tls, real(), &format!("n{i}.openai.com"), "/")
                        .timeout(T_CLIENT),
                )
            })
        })
        .collect();
    let mut peak_in_flight = 0.0f64;
    for _ in 0..20 {
        if let Ok(m) = s.gw.metrics() {
            let v = metric_value(&m, "bulkhead_dns_queries_in_flight", &[]).unwrap_or(0.0);
            peak_in_flight = peak_in_flight.max(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exchanges: Vec<Exchange> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread").expect("client"))
        .collect();
    assert!(peak_in_flight <= 4.0, "in flight: {peak_in_flight}");
    let m = s.gw.metrics()?;
    let refused =
        metric_value(&m, "bulkhead_dns_queries_total", &[("outcome", "refused")]).unwrap_or(0.0);
    assert!(refused > 0.0, "some names were refused:\n{m}");
    let names = metric_value(&m, "bulkhead_dns_cache_names", &[]).unwrap_or(f64::MAX);
    let capacity = metric_value(&m, "bulkhead_dns_cache_capacity", &[]).unwrap_or(0.0);
    assert!(names <= capacity, "{names} > {capacity}");
    // Every flow either resolved and matched, or failed closed: none passed unchecked.
    let mut failed_closed = 0;
    for ex in &exchanges {
        let local = ex.local.expect("client address");
        let r =
            s.gw.wait_record(T_RECORD, |r| src_is(r, local) && r["activity_id"] != 2)
                .unwrap_or_else(|| panic!("no record for {local}"));
        match r["reason"].as_str() {
            Some("rule") => assert_eq!(r["disposition"], "Allowed", "{r:#}"),
            Some("sni_dns_failure") | Some("sni_dns_timeout") => {
                assert_eq!(r["disposition"], "Blocked", "{r:#}");
                assert!(!ex.tls_established, "{ex:?}");
                failed_closed += 1;
            }
            other => panic!("unexpected reason {other:?}: {r:#}"),
        }
    }
    assert!(failed_closed > 0);
    Ok(())
}
