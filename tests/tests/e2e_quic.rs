//! End-to-end QUIC: the real `bulkhead run` between a real HTTP/3 client (quinn and h3, with a
//! post-quantum ClientHello over two Initial packets) in a workload namespace and a real HTTP/3
//! server in the internet namespace. The flows are decided by the name in the client's Initials:
//! permitted ones complete, denied ones time out, rejected ones get ICMP port unreachable and the
//! client gives up at once; the decision records name each flow. Then log-only, and headless
//! Chromium with QUIC forced on where it is installed. Root only.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use bulkhead_lab::clients::Outcome;
use bulkhead_lab::quic::{self, QuicExchange, QuicServer};
use bulkhead_lab::Testbed;
use bulkhead_tests::e2e::*;

const T_DENY: Duration = Duration::from_secs(3);
const T_RECORD: Duration = Duration::from_secs(10);

const QUIC_RULES: &str = r#"
[[rules]]
name = "prod-quic-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "udp"
ports = ["443"]
action = "permit"
log = true

[[rules]]
name = "prod-quic-reject-anthropic"
priority = 110
src = ["prod-agents"]
dst = ["anthropic"]
protocol = "udp"
ports = ["443"]
action = "reject"
"#;

fn h3(tb: &Testbed, ns: &str, server: SocketAddr, name: &str, path: &str) -> QuicExchange {
    quic::h3_get(ns, &tb.pki, server, name, path, T_DENY).expect("run the HTTP/3 client")
}

fn quic_server(tb: &Testbed) -> QuicServer {
    QuicServer::start(tb.lab.internet_netns(), &tb.pki, 443).expect("start the HTTP/3 server")
}

/// Permitted by name (IPv4 and IPv6, a 200 kB body intact), denied by name (silent: the client
/// times out), rejected by name (ICMP port unreachable: the client fails within a second), each
/// with its decision record.
#[test]
fn quic_flows_are_decided_by_name() -> Result<()> {
    if !root_or_skip("quic_flows_are_decided_by_name") {
        return Ok(());
    }
    let tb = testbed();
    let server = quic_server(&tb);
    let gw = start_gateway(&tb, &policy("enforce", QUIC_RULES));
    let prod = tb.lab.workload("prod").netns.clone();

    for dst in [server_v4(443), server_v6(443)] {
        let ex = h3(&tb, &prod, dst, "api.openai.com", "/bytes/200000");
        assert_eq!(
            ex.outcome,
            Outcome::Completed,
            "{dst}: {ex:?}\nrecords: {:#?}\n{}",
            gw.records(),
            gw.output()
        );
        assert_eq!(ex.body.len(), 200_000);
        let local = ex.local.expect("bound");
        let served = server.stats().served();
        assert!(
            served
                .iter()
                .any(|s| s.name == "api.openai.com" && s.path == "/bytes/200000"),
            "the HTTP/3 server answered the request: {served:?}"
        );
        let r = wait_flow_record(&gw, local, &[1], T_RECORD);
        check_record(
            &r,
            &Expect {
                activity_id: 1,
                action: "Allowed",
                disposition: "Allowed",
                src: local,
                dst,
                protocol: "udp",
                name: Some("api.openai.com"),
                tls: true,
                rule: "prod-quic-openai",
                reason: "rule",
                src_groups: &["prod-agents"],
                dst_groups: &["openai"],
            },
        );
    }

    // Denied by the default: dropped silently, nothing reaches the server.
    let deny = h3(&tb, &prod, server_v4(443), "exfil.example.net", "/");
    assert_eq!(deny.outcome, Outcome::TimedOut, "{deny:?}");
    assert!(!deny.handshake);
    let r = wait_flow_record(&gw, deny.local.expect("bound"), &[5], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 5,
            action: "Denied",
            disposition: "Blocked",
            src: deny.local.expect("bound"),
            dst: server_v4(443),
            protocol: "udp",
            name: Some("exfil.example.net"),
            tls: true,
            rule: "default",
            reason: "default",
            src_groups: &["prod-agents"],
            dst_groups: &[],
        },
    );

    // Rejected: ICMP port unreachable, which the kernel reports on the client's connected socket
    // as "connection refused" (administratively prohibited would be "host unreachable").
    let rej = h3(&tb, &prod, server_v4(443), "api.anthropic.com", "/");
    assert_eq!(rej.outcome, Outcome::Refused, "{rej:?}");
    assert!(
        rej.elapsed < Duration::from_secs(1),
        "the client gives up at once: {:?}",
        rej.elapsed
    );
    let r = wait_flow_record(&gw, rej.local.expect("bound"), &[5], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 5,
            action: "Denied",
            disposition: "Blocked",
            src: rej.local.expect("bound"),
            dst: server_v4(443),
            protocol: "udp",
            name: Some("api.anthropic.com"),
            tls: true,
            rule: "prod-quic-reject-anthropic",
            reason: "rule",
            src_groups: &["prod-agents"],
            dst_groups: &["anthropic"],
        },
    );

    let served = server.stats().served();
    assert!(
        served
            .iter()
            .all(|s| s.name != "exfil.example.net" && s.name != "api.anthropic.com"),
        "nothing denied reached the server: {served:?}"
    );
    Ok(())
}

/// Log-only: every QUIC flow passes and completes, and its record carries the name read from
/// its Initials, the verdict enforcement would have given, and `Detected`.
#[test]
fn quic_names_are_recorded_under_log_only() -> Result<()> {
    if !root_or_skip("quic_names_are_recorded_under_log_only") {
        return Ok(());
    }
    let tb = testbed();
    let _server = quic_server(&tb);
    let gw = start_gateway(&tb, &policy("log-only", QUIC_RULES));
    let prod = tb.lab.workload("prod").netns.clone();
    let cases = [
        (
            "api.openai.com",
            "Allowed",
            "prod-quic-openai",
            "rule",
            &["openai"][..],
        ),
        ("exfil.example.net", "Denied", "default", "default", &[][..]),
        (
            "api.anthropic.com",
            "Denied",
            "prod-quic-reject-anthropic",
            "rule",
            &["anthropic"][..],
        ),
    ];
    for (name, action, rule, reason, dst_groups) in cases {
        let ex = h3(&tb, &prod, server_v4(443), name, "/");
        assert_eq!(
            ex.outcome,
            Outcome::Completed,
            "{name}: log-only forwards: {ex:?}\n{}",
            gw.output()
        );
        let local = ex.local.expect("bound");
        let r = wait_flow_record(&gw, local, &[1, 5], T_RECORD);
        check_record(
            &r,
            &Expect {
                activity_id: r["activity_id"].as_u64().unwrap_or(0),
                action,
                disposition: "Detected",
                src: local,
                dst: server_v4(443),
                protocol: "udp",
                name: Some(name),
                tls: true,
                rule,
                reason,
                src_groups: &["prod-agents"],
                dst_groups,
            },
        );
    }
    Ok(())
}

/// Headless Chromium with QUIC forced on for the origin: a permitted name loads over HTTP/3
/// through the gateway (the HTTP/3 server, not the TCP one, answers it), with its record; a
/// denied name does not load over QUIC. Skipped, saying why, where no Chromium is installed.
#[test]
fn chromium_over_quic() -> Result<()> {
    if !root_or_skip("chromium_over_quic") {
        return Ok(());
    }
    let Some(chromium) = quic::find_chromium() else {
        eprintln!(
            "SKIPPED chromium_over_quic: no chromium, chromium-browser or google-chrome on PATH"
        );
        return Ok(());
    };
    let tb = testbed();
    let server = quic_server(&tb);
    let gw = start_gateway(&tb, &policy("enforce", QUIC_RULES));
    let prod = tb.lab.workload("prod").netns.clone();
    let t = Duration::from_secs(20);
    let run = quic::chromium_get(
        &tb.lab,
        &prod,
        &tb.pki,
        &chromium,
        server_v4(443),
        "api.openai.com",
        t,
    )?;
    assert_eq!(
        run.outcome,
        Outcome::Completed,
        "{run:?}\nrecords: {:#?}",
        gw.records()
    );
    let served = server.stats().served();
    assert!(
        served
            .iter()
            .any(|s| s.name == "api.openai.com" && s.path == "/"),
        "the HTTP/3 server did not answer Chromium: {served:?}"
    );
    // The server sees the gateway's address (the lab translates it); the record is found by
    // protocol and name, and its client address must be the workload's.
    let r = gw
        .wait_record(T_RECORD, |r| {
            r["connection_info"]["protocol_name"].as_str() == Some("udp")
                && r["tls"]["sni"].as_str() == Some("api.openai.com")
        })
        .unwrap_or_else(|| panic!("no QUIC record for Chromium: {:#?}", gw.records()));
    let local = SocketAddr::new(
        r["src_endpoint"]["ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("src_endpoint.ip"),
        r["src_endpoint"]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("src_endpoint.port"),
    );
    assert_eq!(
        local.ip(),
        std::net::IpAddr::V4(tb.lab.workload("prod").v4),
        "{r:#}"
    );
    check_record(
        &r,
        &Expect {
            activity_id: 1,
            action: "Allowed",
            disposition: "Allowed",
            src: local,
            dst: server_v4(443),
            protocol: "udp",
            name: Some("api.openai.com"),
            tls: true,
            rule: "prod-quic-openai",
            reason: "rule",
            src_groups: &["prod-agents"],
            dst_groups: &["openai"],
        },
    );

    // A name the policy denies over QUIC: the HTTP/3 server never sees it, and the gateway's
    // record names it. (Chromium may then try TCP, which no rule here permits either.)
    let run = quic::chromium_get(
        &tb.lab,
        &prod,
        &tb.pki,
        &chromium,
        server_v4(443),
        "api.anthropic.com",
        Duration::from_secs(10),
    )?;
    assert_ne!(run.outcome, Outcome::Completed, "{run:?}");
    assert!(
        server
            .stats()
            .served()
            .iter()
            .all(|s| s.name != "api.anthropic.com"),
        "a rejected name reached the HTTP/3 server"
    );
    let rejected = gw.wait_record(T_RECORD, |r| {
        r["connection_info"]["protocol_name"].as_str() == Some("udp")
            && r["tls"]["sni"].as_str() == Some("api.anthropic.com")
    });
    let r = rejected.expect("a record of Chromium's rejected QUIC flow");
    assert_eq!(
        r["policy"]["name"].as_str(),
        Some("prod-quic-reject-anthropic")
    );
    assert_eq!(r["disposition"].as_str(), Some("Blocked"));
    Ok(())
}
