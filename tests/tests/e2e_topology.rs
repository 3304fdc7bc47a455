//! The laboratory itself, with plain kernel forwarding in the gateway namespace (no Bulkhead):
//! every client reaches every server, over IPv4 and IPv6. This is the baseline the other
//! end-to-end tests change by putting the gateway in the path.

use std::time::Duration;

use anyhow::Result;
use bulkhead_lab::clients::{self, Outcome, Request};
use bulkhead_tests::e2e::*;

#[test]
fn kernel_forwarding_carries_every_client() -> Result<()> {
    if !root_or_skip("kernel_forwarding_carries_every_client") {
        return Ok(());
    }
    let tb = testbed();
    let prod = tb.lab.workload("prod").netns.clone();
    let dev = tb.lab.workload("dev").netns.clone();

    // In-process rustls client with the post-quantum key share, IPv4 and IPv6, 1 MiB body.
    for server in [server_v4(443), server_v6(443)] {
        let ex = clients::fetch(
            &prod,
            Request::https(&tb.client_tls, server, "api.openai.com", "/bytes/1048576"),
        )?;
        assert_eq!(ex.outcome, Outcome::Completed, "{server}: {ex:?}");
        assert_eq!(ex.body_len, 1_048_576);
        assert!(ex.body_intact);
        assert_eq!(ex.served_name.as_deref(), Some("api.openai.com"));
        assert!(ex.tcp_bytes_received > 1_048_576, "{ex:?}");
    }

    // Same address, another name: the server picks the certificate by SNI.
    let ex = clients::fetch(
        &dev,
        Request::https(&tb.client_tls, server_v4(443), "api.anthropic.com", "/"),
    )?;
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    assert_eq!(ex.served_name.as_deref(), Some("api.anthropic.com"));

    // A name the server has no certificate for fails the TLS handshake (not a network error).
    let ex = clients::fetch(
        &dev,
        Request::https(&tb.client_tls, server_v4(443), "unknown.example.com", "/"),
    )?;
    assert!(matches!(ex.outcome, Outcome::Failed(_)), "{ex:?}");

    // Plain HTTP, Host-based.
    let ex = clients::fetch(
        &prod,
        Request::http(server_v4(80), "plain.example.com", "/bytes/5000"),
    )?;
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
    assert_eq!(ex.served_name.as_deref(), Some("plain.example.com"));

    // UDP echo, both families.
    for server in [server_v4(53), server_v6(5001)] {
        let (o, rtt) = clients::udp_echo(&prod, server, b"ping".to_vec(), Duration::from_secs(2))?;
        assert_eq!(o, Outcome::Completed, "{server}");
        // The first datagram includes neighbour discovery on both links: still fast.
        assert!(
            rtt < Duration::from_millis(500),
            "{server}: first echo after {rtt:?}"
        );
    }
    // A closed port answers with ICMP port unreachable: refused.
    let (o, _) = clients::udp_echo(&prod, server_v4(9), b"x".to_vec(), Duration::from_secs(2))?;
    assert_eq!(o, Outcome::Refused);

    // A closed TCP port is refused.
    let ex = clients::fetch(&prod, Request::http(server_v4(81), "x", "/"))?;
    assert_eq!(ex.outcome, Outcome::Refused, "{ex:?}");

    // The C2 address answers too (until a policy says otherwise).
    let ex = clients::fetch(
        &prod,
        Request::https(&tb.client_tls, c2_v4(443), "exfil.example.net", "/"),
    )?;
    assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");

    let served = tb.servers.stats().served();
    assert!(served
        .iter()
        .any(|s| s.name == "api.openai.com" && s.tls && s.complete));
    Ok(())
}

#[test]
fn external_clients_work_through_the_lab() -> Result<()> {
    if !root_or_skip("external_clients_work_through_the_lab") {
        return Ok(());
    }
    let tb = testbed();
    let prod = tb.lab.workload("prod").netns.clone();
    let t = Duration::from_secs(5);
    for server in [server_v4(443), server_v6(443)] {
        let run = clients::curl(
            &prod,
            server,
            "api.openai.com",
            "/bytes/100000",
            Some(&tb.ca_path),
            t,
        )?;
        assert_eq!(run.outcome, Outcome::Completed, "curl {server}: {run:?}");
    }
    let run = clients::curl(
        &prod,
        server_v4(80),
        "plain.example.com",
        "/bytes/777",
        None,
        t,
    )?;
    assert_eq!(run.outcome, Outcome::Completed, "{run:?}");
    let run = clients::openssl_s_client(
        &prod,
        server_v4(443),
        "api.anthropic.com",
        "/",
        &tb.ca_path,
        t,
    )?;
    assert_eq!(run.outcome, Outcome::Completed, "{run:?}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("hello from api.anthropic.com"));
    // curl reports a refused connection as such.
    let run = clients::curl(
        &prod,
        server_v4(444),
        "api.openai.com",
        "/",
        Some(&tb.ca_path),
        t,
    )?;
    assert_eq!(run.outcome, Outcome::Refused, "{run:?}");
    Ok(())
}

#[test]
fn lab_removes_its_namespaces_on_drop_and_on_panic() -> Result<()> {
    if !root_or_skip("lab_removes_its_namespaces_on_drop_and_on_panic") {
        return Ok(());
    }
    let names = {
        let tb = testbed();
        let mut n = vec![
            tb.lab.gateway_netns().to_owned(),
            tb.lab.internet_netns().to_owned(),
        ];
        n.extend(tb.lab.workloads().iter().map(|w| w.netns.clone()));
        for ns in &n {
            assert!(bulkhead_lab::netns::netns_path(ns).exists());
        }
        n
    };
    for ns in &names {
        assert!(
            !bulkhead_lab::netns::netns_path(ns).exists(),
            "{ns} left behind"
        );
    }
    let gw = std::panic::catch_unwind(|| {
        let tb = testbed();
        let gw = tb.lab.gateway_netns().to_owned();
        std::panic::panic_any(gw);
    })
    .expect_err("the closure panics");
    let gw = gw.downcast::<String>().expect("namespace name");
    assert!(
        !bulkhead_lab::netns::netns_path(&gw).exists(),
        "{gw} left behind after a panic"
    );
    Ok(())
}

/// The long-lived stream flows and stops when dropped; the raw SYN flood sender works at its
/// nominal rate (about 10k a second) and kernel forwarding alone keeps the stream going.
#[test]
fn stream_and_flood_tools_work_with_kernel_forwarding() -> Result<()> {
    if !root_or_skip("stream_and_flood_tools_work_with_kernel_forwarding") {
        return Ok(());
    }
    let tb = testbed();
    let prod = tb.lab.workload("prod").netns.clone();
    let dev = tb.lab.workload("dev").clone();
    let stream = clients::StreamWatch::open(
        &prod,
        Request::https(&tb.client_tls, server_v4(443), "api.openai.com", "/stream"),
    )?;
    assert!(
        stream.wait_bytes(20_000, Duration::from_secs(5)),
        "{:?}",
        stream.ended()
    );
    let before = stream.bytes();
    let sent = syn_flood(&dev.netns, dev.v4, 10_000, Duration::from_secs(2))?;
    assert!(sent >= 5_000, "sent {sent}");
    assert!(stream.ended().is_none());
    assert!(
        stream.bytes() - before >= 50_000,
        "{} bytes during the flood",
        stream.bytes() - before
    );
    assert!(stream.intact());
    let t = std::time::Instant::now();
    drop(stream);
    assert!(t.elapsed() < Duration::from_secs(1));
    Ok(())
}
