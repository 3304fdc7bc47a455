//! End-to-end: the real `bulkhead run` in the gateway namespace of a lab, real clients in the
//! workload namespaces, real servers in the internet namespace. Each test builds its own lab and
//! gateway; both are removed when the test ends, also when it fails. Root only.

use std::time::Duration;

use anyhow::Result;
use bulkhead_lab::clients::{self, Exchange, Outcome, Request};
use bulkhead_lab::Testbed;
use bulkhead_tests::e2e::*;

const T_DENY: Duration = Duration::from_secs(3);
const T_RECORD: Duration = Duration::from_secs(10);
/// The gateway writes a flow's end record when the flow closes (FIN both ways); the clients
/// close their connections as soon as the exchange is over. Generous for a loaded machine.
const T_FLOW_END: Duration = Duration::from_secs(10);

/// Compares a flow-end record's traffic with a capture at the workload's interface.
fn check_traffic(
    end: &serde_json::Value,
    pkts: &[TapPacket],
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
) {
    let (bytes_out, packets_out, bytes_in, packets_in) = tap_traffic(pkts, client, server);
    let t = &end["traffic"];
    assert_eq!(
        (
            t["bytes_out"].as_u64(),
            t["packets_out"].as_u64(),
            t["bytes_in"].as_u64(),
            t["packets_in"].as_u64()
        ),
        (
            Some(bytes_out),
            Some(packets_out),
            Some(bytes_in),
            Some(packets_in)
        ),
        "flow-end traffic (bytes_out, packets_out, bytes_in, packets_in) against the capture at \
         the workload; record {end:#}"
    );
    assert_eq!(end["end_reason"].as_str(), Some("fin"), "{end:#}");
}

/// A gateway whose flows all cross the TUN, so that its flow-end counts are its own and
/// compared with a capture to the packet. (With the kernel fast path the counts of a handed-off
/// flow come from conntrack, which can differ by a handshake packet: `e2e_fastpath.rs`.)
fn start_exact(tb: &Testbed) -> bulkhead_lab::gateway::GatewayProcess {
    let mut spec = bulkhead_lab::gateway::GatewaySpec::new(
        bulkhead_bin(),
        &policy("enforce", PERMIT_PROD_OPENAI),
    );
    spec.fast_path = Some(false);
    start_gateway_with(tb, spec)
}

fn https(tb: &Testbed, ns: &str, server: std::net::SocketAddr, name: &str, path: &str) -> Exchange {
    clients::fetch(
        ns,
        Request::https(&tb.client_tls, server, name, path).timeout(T_DENY),
    )
    .expect("run the client")
}

const PERMIT_PROD_OPENAI: &str = r#"
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
name = "prod-reject-anthropic"
priority = 110
src = ["prod-agents"]
dst = ["anthropic"]
protocol = "tcp"
ports = ["443"]
action = "reject"
"#;

/// A permitted name: the HTTPS request completes with every client (rustls with the
/// X25519MLKEM768 hello that spans two segments, curl, openssl), the body arrives intact, and the
/// decision and flow-end records say exactly what happened.
#[test]
fn permitted_name_completes_and_is_logged_exactly() -> Result<()> {
    if !root_or_skip("permitted_name_completes_and_is_logged_exactly") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start_exact(&tb);
    let prod = tb.lab.workload("prod").netns.clone();
    let body = 2_000_000u64;

    let tap = Tap::start(&prod);
    let ex = https(
        &tb,
        &prod,
        server_v4(443),
        "api.openai.com",
        &format!("/bytes/{body}"),
    );
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}\n{}", gw.output());
    assert_eq!(ex.body_len, body);
    assert!(ex.body_intact);
    let local = ex.local.expect("connected");

    let open = wait_flow_record(&gw, local, &[1], T_RECORD);
    check_record(
        &open,
        &Expect {
            activity_id: 1,
            action: "Allowed",
            disposition: "Allowed",
            src: local,
            dst: server_v4(443),
            protocol: "tcp",
            name: Some("api.openai.com"),
            tls: true,
            rule: "prod-to-openai",
            reason: "rule",
            src_groups: &["prod-agents"],
            dst_groups: &["openai"],
        },
    );

    // Flow end: the byte and packet counts both ways are what crossed the workload's interface.
    let end = wait_flow_record(&gw, local, &[2], T_FLOW_END);
    let pkts = tap.stop();
    check_traffic(&end, &pkts, local, server_v4(443));
    // The hello (X25519MLKEM768 key share) is larger than one segment: the name above was read
    // from a hello that crossed the wire in two segments or more.
    let (packets, bytes, mss) = first_flight(&pkts, local, server_v4(443));
    let mss = mss.expect("MSS options on the handshake");
    eprintln!(
        "client hello at the workload: {bytes} bytes in {packets} packet(s), MSS {mss}: {} \
         segment(s) on the wire",
        bytes.div_ceil(u64::from(mss))
    );
    assert!(
        bytes > u64::from(mss),
        "a hello of {bytes} bytes fits one segment of {mss}"
    );
    assert_eq!(end["policy"]["name"].as_str(), Some("prod-to-openai"));
    assert_eq!(
        end["dst_endpoint"]["hostname"].as_str(),
        Some("api.openai.com")
    );

    // The same through curl and openssl s_client.
    let run = clients::curl(
        &prod,
        server_v4(443),
        "api.openai.com",
        "/bytes/300000",
        Some(&tb.ca_path),
        T_DENY,
    )?;
    assert_eq!(run.outcome, Outcome::Completed, "curl: {run:?}");
    let run = clients::openssl_s_client(
        &prod,
        server_v4(443),
        "api.openai.com",
        "/",
        &tb.ca_path,
        T_DENY,
    )?;
    assert_eq!(run.outcome, Outcome::Completed, "openssl: {run:?}");
    Ok(())
}

/// One server address, three names, three verdicts: permit completes, reject resets the
/// connection in under a second, deny (the default) leaves the client to time out.
#[test]
fn same_address_different_names_different_verdicts() -> Result<()> {
    if !root_or_skip("same_address_different_names_different_verdicts") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start_gateway(&tb, &policy("enforce", PERMIT_PROD_OPENAI));
    let prod = tb.lab.workload("prod").netns.clone();

    let ok = https(&tb, &prod, server_v4(443), "api.openai.com", "/");
    assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}");

    let rej = https(&tb, &prod, server_v4(443), "api.anthropic.com", "/");
    assert_eq!(rej.outcome, Outcome::Reset, "{rej:?}");
    assert!(
        rej.elapsed < Duration::from_secs(1),
        "reset after {:?}",
        rej.elapsed
    );
    assert!(!rej.tls_established);
    let r = wait_flow_record(&gw, rej.local.unwrap(), &[5], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 5,
            action: "Denied",
            disposition: "Blocked",
            src: rej.local.unwrap(),
            dst: server_v4(443),
            protocol: "tcp",
            name: Some("api.anthropic.com"),
            tls: true,
            rule: "prod-reject-anthropic",
            reason: "rule",
            src_groups: &["prod-agents"],
            dst_groups: &["anthropic"],
        },
    );

    let deny = https(&tb, &prod, server_v4(443), "exfil.example.net", "/");
    assert_eq!(deny.outcome, Outcome::TimedOut, "{deny:?}");
    assert!(!deny.tls_established);
    let r = wait_flow_record(&gw, deny.local.unwrap(), &[5], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 5,
            action: "Denied",
            disposition: "Blocked",
            src: deny.local.unwrap(),
            dst: server_v4(443),
            protocol: "tcp",
            name: Some("exfil.example.net"),
            tls: true,
            rule: "default",
            reason: "default",
            src_groups: &["prod-agents"],
            dst_groups: &[],
        },
    );
    // The server never completed a handshake for the refused names.
    let served = tb.servers.stats().served();
    assert!(
        served.iter().all(|s| s.name == "api.openai.com"),
        "{served:?}"
    );

    // curl sees the same verdicts.
    let run = clients::curl(
        &prod,
        server_v4(443),
        "api.anthropic.com",
        "/",
        Some(&tb.ca_path),
        T_DENY,
    )?;
    assert_eq!(run.outcome, Outcome::Reset, "{run:?}");
    let run = clients::curl(
        &prod,
        server_v4(443),
        "exfil.example.net",
        "/",
        Some(&tb.ca_path),
        T_DENY,
    )?;
    assert_eq!(run.outcome, Outcome::TimedOut, "{run:?}");
    Ok(())
}

/// Plain HTTP on port 80 is decided on the Host header.
#[test]
fn http_host_rules_on_port_80() -> Result<()> {
    if !root_or_skip("http_host_rules_on_port_80") {
        return Ok(());
    }
    let tb = testbed();
    let rules = r#"
[[rules]]
name = "dev-plain-ok"
priority = 100
src = ["dev"]
dst = ["plain-ok"]
protocol = "tcp"
ports = ["80"]
action = "permit"
log = true

[[rules]]
name = "dev-http-other"
priority = 200
src = ["dev"]
dst = ["any"]
protocol = "tcp"
ports = ["80"]
action = "reject"
"#;
    let gw = start_gateway(&tb, &policy("enforce", rules));
    let dev = tb.lab.workload("dev").netns.clone();

    let ok = clients::fetch(
        &dev,
        Request::http(server_v4(80), "ok.example.com", "/bytes/100000").timeout(T_DENY),
    )?;
    assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}");
    assert_eq!(ok.served_name.as_deref(), Some("ok.example.com"));
    let r = wait_flow_record(&gw, ok.local.unwrap(), &[1], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 1,
            action: "Allowed",
            disposition: "Allowed",
            src: ok.local.unwrap(),
            dst: server_v4(80),
            protocol: "tcp",
            name: Some("ok.example.com"),
            tls: false,
            rule: "dev-plain-ok",
            reason: "rule",
            src_groups: &["dev"],
            dst_groups: &["plain-ok"],
        },
    );

    let bad = clients::fetch(
        &dev,
        Request::http(server_v4(80), "evil.example.com", "/").timeout(T_DENY),
    )?;
    assert_eq!(bad.outcome, Outcome::Reset, "{bad:?}");
    let r = wait_flow_record(&gw, bad.local.unwrap(), &[5], T_RECORD);
    assert_eq!(
        r["http"]["host"].as_str(),
        Some("evil.example.com"),
        "{r:#}"
    );
    assert_eq!(r["policy"]["name"].as_str(), Some("dev-http-other"));

    let run = clients::curl(
        &dev,
        server_v4(80),
        "ok.example.com",
        "/bytes/4096",
        None,
        T_DENY,
    )?;
    assert_eq!(run.outcome, Outcome::Completed, "{run:?}");
    let served = tb.servers.stats().served();
    assert!(
        served.iter().all(|s| s.name == "ok.example.com"),
        "{served:?}"
    );
    Ok(())
}

/// Log-only mode forwards what the policy denies and records it as Detected.
#[test]
fn log_only_mode_passes_and_records_detected() -> Result<()> {
    if !root_or_skip("log_only_mode_passes_and_records_detected") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start_gateway(&tb, &policy("log-only", PERMIT_PROD_OPENAI));
    let prod = tb.lab.workload("prod").netns.clone();
    for (name, rule, reason, groups) in [
        ("exfil.example.net", "default", "default", &[][..]),
        (
            "api.anthropic.com",
            "prod-reject-anthropic",
            "rule",
            &["anthropic"][..],
        ),
    ] {
        let ex = https(&tb, &prod, server_v4(443), name, "/bytes/50000");
        assert_eq!(ex.outcome, Outcome::Completed, "{name}: {ex:?}");
        let r = wait_flow_record(&gw, ex.local.unwrap(), &[1, 5], T_RECORD);
        check_record(
            &r,
            &Expect {
                activity_id: r["activity_id"].as_u64().unwrap(),
                action: "Denied",
                disposition: "Detected",
                src: ex.local.unwrap(),
                dst: server_v4(443),
                protocol: "tcp",
                name: Some(name),
                tls: true,
                rule,
                reason,
                src_groups: &["prod-agents"],
                dst_groups: groups,
            },
        );
    }
    Ok(())
}

/// A watch rule records what it would do (Detected) and the next rule decides.
#[test]
fn watch_rule_passes_and_records_detected() -> Result<()> {
    if !root_or_skip("watch_rule_passes_and_records_detected") {
        return Ok(());
    }
    let tb = testbed();
    let rules = r#"
[[rules]]
name = "watch-dev-anthropic"
priority = 50
src = ["dev"]
dst = ["anthropic"]
protocol = "tcp"
ports = ["443"]
action = "deny"
watch = true

[[rules]]
name = "dev-to-ai"
priority = 100
src = ["dev"]
dst = ["openai", "anthropic"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true
"#;
    let gw = start_gateway(&tb, &policy("enforce", rules));
    let dev = tb.lab.workload("dev").netns.clone();
    let ex = https(
        &tb,
        &dev,
        server_v4(443),
        "api.anthropic.com",
        "/bytes/10000",
    );
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    let local = ex.local.unwrap();
    let r = wait_flow_record(&gw, local, &[1], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 1,
            action: "Denied",
            disposition: "Detected",
            src: local,
            dst: server_v4(443),
            protocol: "tcp",
            name: Some("api.anthropic.com"),
            tls: true,
            rule: "watch-dev-anthropic",
            reason: "rule",
            src_groups: &["dev"],
            dst_groups: &["anthropic"],
        },
    );
    // A name the watch rule does not cover is simply allowed by the next rule.
    let ex = https(&tb, &dev, server_v4(443), "api.openai.com", "/");
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    let r = wait_flow_record(&gw, ex.local.unwrap(), &[1], T_RECORD);
    assert_eq!(r["disposition"].as_str(), Some("Allowed"), "{r:#}");
    assert_eq!(r["policy"]["name"].as_str(), Some("dev-to-ai"));
    Ok(())
}

/// IPv6 end to end: permit, reject, deny, and the records carry IPv6 endpoints.
#[test]
fn ipv6_end_to_end() -> Result<()> {
    if !root_or_skip("ipv6_end_to_end") {
        return Ok(());
    }
    let tb = testbed();
    let gw = start_exact(&tb);
    let prod = tb.lab.workload("prod").netns.clone();
    let tap = Tap::start(&prod);
    let ok = https(
        &tb,
        &prod,
        server_v6(443),
        "api.openai.com",
        "/bytes/500000",
    );
    assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}");
    assert!(ok.body_intact);
    let local = ok.local.unwrap();
    assert!(local.is_ipv6());
    let r = wait_flow_record(&gw, local, &[1], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 1,
            action: "Allowed",
            disposition: "Allowed",
            src: local,
            dst: server_v6(443),
            protocol: "tcp",
            name: Some("api.openai.com"),
            tls: true,
            rule: "prod-to-openai",
            reason: "rule",
            src_groups: &["prod-agents"],
            dst_groups: &["openai"],
        },
    );
    let end = wait_flow_record(&gw, local, &[2], T_FLOW_END);
    check_traffic(&end, &tap.stop(), local, server_v6(443));
    let rej = https(&tb, &prod, server_v6(443), "api.anthropic.com", "/");
    assert_eq!(rej.outcome, Outcome::Reset, "{rej:?}");
    assert!(rej.elapsed < Duration::from_secs(1));
    let deny = https(&tb, &prod, server_v6(443), "exfil.example.net", "/");
    assert_eq!(deny.outcome, Outcome::TimedOut, "{deny:?}");
    let run = clients::curl(
        &prod,
        server_v6(443),
        "api.openai.com",
        "/bytes/10000",
        Some(&tb.ca_path),
        T_DENY,
    )?;
    assert_eq!(run.outcome, Outcome::Completed, "{run:?}");
    Ok(())
}

/// UDP is decided by port on the first datagram: DNS permitted, another port denied (silence)
/// or rejected (ICMP).
#[test]
fn udp_rule_by_port() -> Result<()> {
    if !root_or_skip("udp_rule_by_port") {
        return Ok(());
    }
    let tb = testbed();
    let rules = r#"
[[rules]]
name = "dns"
priority = 100
src = ["any"]
dst = ["any"]
protocol = "udp"
ports = ["53"]
action = "permit"
log = true

[[rules]]
name = "dev-udp-reject"
priority = 200
src = ["dev"]
dst = ["any"]
protocol = "udp"
action = "reject"
"#;
    let gw = start_gateway(&tb, &policy("enforce", rules));
    let prod = tb.lab.workload("prod").netns.clone();
    let dev = tb.lab.workload("dev").netns.clone();
    let t = Duration::from_secs(2);
    for server in [server_v4(53), server_v6(53)] {
        let (o, rtt) = clients::udp_echo(&prod, server, b"query".to_vec(), t)?;
        assert_eq!(
            o,
            Outcome::Completed,
            "{server}: the first datagram got no echo within {t:?}; records: {:#?}",
            gw.records()
        );
        assert!(
            rtt < Duration::from_millis(500),
            "{server}: echo after {rtt:?}"
        );
    }
    let (o, _) = clients::udp_echo(&prod, server_v4(5001), b"x".to_vec(), t)?;
    assert_eq!(o, Outcome::TimedOut, "default deny is silent");
    let (o, elapsed) = clients::udp_echo(&dev, server_v4(5001), b"x".to_vec(), t)?;
    assert!(
        matches!(o, Outcome::Refused | Outcome::Unreachable),
        "reject answers with ICMP: {o:?}"
    );
    assert!(elapsed < Duration::from_secs(1));
    let r = gw
        .wait_record(T_RECORD, |r| {
            r["connection_info"]["protocol_name"].as_str() == Some("udp")
                && r["dst_endpoint"]["port"].as_u64() == Some(53)
                && r["activity_id"].as_u64() == Some(1)
        })
        .expect("a record for the DNS flow");
    assert_eq!(r["policy"]["name"].as_str(), Some("dns"));
    assert_eq!(r["action"].as_str(), Some("Allowed"));
    let r = gw
        .wait_record(T_RECORD, |r| {
            r["dst_endpoint"]["port"].as_u64() == Some(5001)
                && r["policy"]["name"].as_str() == Some("default")
        })
        .expect("a record for the denied datagram");
    assert_eq!(r["disposition"].as_str(), Some("Blocked"), "{r:#}");
    assert_eq!(r["connection_info"]["protocol_name"].as_str(), Some("udp"));
    Ok(())
}

/// An address-group deny (a C2 host) is decided on the SYN: the handshake never completes, the
/// record carries no name.
#[test]
fn address_group_deny_on_the_syn() -> Result<()> {
    if !root_or_skip("address_group_deny_on_the_syn") {
        return Ok(());
    }
    let tb = testbed();
    let rules = r#"
[[rules]]
name = "block-c2"
priority = 10
src = ["any"]
dst = ["c2-blocklist"]
protocol = "any"
action = "deny"

[[rules]]
name = "prod-any-443"
priority = 100
src = ["prod-agents"]
dst = ["any"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;
    let gw = start_gateway(&tb, &policy("enforce", rules));
    let prod = tb.lab.workload("prod").netns.clone();
    let accepted_before = tb
        .servers
        .stats()
        .tcp_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let ex = https(&tb, &prod, c2_v4(443), "api.openai.com", "/");
    assert_eq!(ex.outcome, Outcome::TimedOut, "{ex:?}");
    assert_eq!(
        tb.servers
            .stats()
            .tcp_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        accepted_before,
        "the SYN must not reach the C2 host"
    );
    let local = ex
        .local
        .expect("the client's address is known before the SYN");
    assert_eq!(local.ip(), std::net::IpAddr::V4(tb.lab.workload("prod").v4));
    let r = wait_flow_record(&gw, local, &[5], T_RECORD);
    check_record(
        &r,
        &Expect {
            activity_id: 5,
            action: "Denied",
            disposition: "Blocked",
            src: local,
            dst: c2_v4(443),
            protocol: "tcp",
            name: None,
            tls: true,
            rule: "block-c2",
            reason: "rule",
            src_groups: &["prod-agents"],
            dst_groups: &["c2-blocklist"],
        },
    );
    // The same host over UDP and IPv6 is blocked too; the main server still answers.
    let (o, _) = clients::udp_echo(&prod, c2_v4(53), b"x".to_vec(), Duration::from_secs(1))?;
    assert_eq!(o, Outcome::TimedOut);
    let ex = https(
        &tb,
        &prod,
        std::net::SocketAddr::new(bulkhead_lab::addr::C2_V6.into(), 443),
        "api.openai.com",
        "/",
    );
    assert_eq!(ex.outcome, Outcome::TimedOut, "{ex:?}");
    let ex = https(&tb, &prod, server_v4(443), "api.openai.com", "/");
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    Ok(())
}
