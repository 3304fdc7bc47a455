//! Hostile input against the pipeline, through the in-memory harness with a fake clock: real
//! ClientHellos cut up the ways evasion tools cut them, flows seen mid-stream, and every bound.
//! Each case must yield the true name or a fail-closed deny, never another name.

use std::time::Duration;

use bulkhead_gateway::pipeline::{Disposition, DropReason, PacketMeta, PipelineConfig};
use bulkhead_gateway::record::{Disposition as RecDisposition, EndReason, Reason, RecordAction};
use bulkhead_testkit::*;

/// The hellos the cases are generated from, with their true names: a synthetic one, and every
/// real one (testdata, plus the extra corpus when present) that names a server `POLICY_OPENAI`
/// permits.
fn real_hellos(test: &str) -> Vec<(String, Vec<u8>, String)> {
    let mut v = vec![(
        "synthetic".to_owned(),
        client_hello(Some("api.openai.com"), 600),
        "api.openai.com".to_owned(),
    )];
    for row in payloads(&["client__"]) {
        let [name] = &row.expected_names()[..] else {
            continue;
        };
        if name == "api.openai.com" || name == "api.anthropic.com" {
            v.push((row.label(), row.bytes(), name.clone()));
        }
    }
    assert!(
        v.len() >= 3,
        "{test}: the real hellos of testdata/ are missing"
    );
    v
}

/// Sends the handshake, then `segments` (offset, bytes) of client data; returns the harness.
fn run(segments: &[(u32, Vec<u8>)]) -> (Harness, Conn, Vec<Disposition>) {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40000);
    handshake(&mut h, &c);
    let mut ds = Vec::new();
    for (off, bytes) in segments {
        ds.push(h.send(&c.data(*off, bytes)));
    }
    (h, c, ds)
}

/// The flow was permitted with exactly the true name, and the server gets the hello intact.
fn assert_true_name(h: &Harness, c: &Conn, hello: &[u8], name: &str, case: &str) {
    let names = h.names();
    assert_eq!(
        names,
        vec![Some(name.to_owned())],
        "{case}: names {names:?}"
    );
    let r = h.decisions()[0];
    assert_eq!(r.action, RecordAction::Allowed, "{case}");
    assert_eq!(r.tls.as_ref().unwrap().sni, name, "{case}");
    let stream = client_stream(c, &h.wire);
    assert_eq!(stream.len(), hello.len(), "{case}: released stream length");
    assert!(
        stream == hello,
        "{case}: released stream differs from the hello"
    );
    assert!(rsts(&h.wire).is_empty(), "{case}: no reset expected");
}

fn chunks(hello: &[u8], size: usize) -> Vec<(u32, Vec<u8>)> {
    hello
        .chunks(size)
        .enumerate()
        .map(|(i, c)| ((i * size) as u32, c.to_vec()))
        .collect()
}

#[test]
fn one_byte_segments_yield_the_true_name() {
    for (case, hello, name) in real_hellos("one_byte_segments") {
        let (h, c, ds) = run(&chunks(&hello, 1));
        assert!(
            ds.iter().all(|d| *d == Disposition::Held),
            "{case}: every byte held"
        );
        assert_true_name(&h, &c, &hello, &name, &case);
        assert_eq!(
            h.pipe.stats().held_bytes_now,
            h.pipe.stats().held_bytes_now.min(16 * 1024)
        );
    }
}

#[test]
fn a_split_inside_the_name_yields_the_true_name() {
    for (case, hello, name) in real_hellos("split_inside_name") {
        let at = hello
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap()
            + 3;
        let segs = vec![(0, hello[..at].to_vec()), (at as u32, hello[at..].to_vec())];
        let (h, c, ds) = run(&segs);
        assert_eq!(ds, vec![Disposition::Held, Disposition::Held], "{case}");
        assert_true_name(&h, &c, &hello, &name, &case);
    }
}

#[test]
fn segments_in_reverse_order_yield_the_true_name() {
    for (case, hello, name) in real_hellos("reverse_order") {
        let mut segs = chunks(&hello, 100);
        segs.reverse();
        let (h, c, _) = run(&segs);
        assert_true_name(&h, &c, &hello, &name, &case);
        // Released in sequence order, whatever order they came in.
        let offs: Vec<u32> = h
            .wire
            .iter()
            .filter_map(|p| {
                let s = etherparse::SlicedPacket::from_ip(p).ok()?;
                match s.transport? {
                    etherparse::TransportSlice::Tcp(t) if !t.payload().is_empty() => {
                        Some(t.sequence_number().wrapping_sub(c.cisn.wrapping_add(1)))
                    }
                    _ => None,
                }
            })
            .collect();
        let mut sorted = offs.clone();
        sorted.sort_unstable();
        assert_eq!(offs, sorted, "{case}: released in order");
    }
}

#[test]
fn duplicated_and_agreeing_overlapping_segments_yield_the_true_name() {
    for (case, hello, name) in real_hellos("duplicates") {
        let mut segs = Vec::new();
        for (off, bytes) in chunks(&hello, 300) {
            segs.push((off, bytes.clone()));
            segs.push((off, bytes.clone()));
            // An overlapping retransmission that agrees, cut at other boundaries.
            let o = off as usize + 150;
            if o + 200 <= hello.len() {
                segs.push((o as u32, hello[o..o + 200].to_vec()));
            }
        }
        let (h, c, ds) = run(&segs);
        assert!(
            ds.contains(&Disposition::Drop(DropReason::Duplicate)),
            "{case}"
        );
        assert_true_name(&h, &c, &hello, &name, &case);
    }
}

#[test]
fn conflicting_overlapping_segments_fail_closed() {
    for (case, hello, name) in real_hellos("conflicting_overlap") {
        let at = hello
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap();
        // The gateway sees one name, the server could see another: "api.openai.com" vs "evil...".
        let mut forged = hello[at..at + name.len()].to_vec();
        forged[0] = b'x';
        // Orders: forged first then the real bytes, and real first then forged.
        for forged_first in [true, false] {
            let real = (at as u32, hello[at..at + name.len()].to_vec());
            let fake = (at as u32, forged.clone());
            let mut segs = if forged_first {
                vec![fake, real]
            } else {
                vec![real, fake]
            };
            segs.push((0, hello[..at].to_vec()));
            segs.push(((at + name.len()) as u32, hello[at + name.len()..].to_vec()));
            let (h, c, ds) = run(&segs);
            assert_eq!(
                ds[1],
                Disposition::Drop(DropReason::FailClosed(Reason::AmbiguousOverlap)),
                "{case}"
            );
            let recs = h.decisions();
            assert_eq!(recs.len(), 1, "{case}");
            assert_eq!(recs[0].reason, Reason::AmbiguousOverlap, "{case}");
            assert_eq!(recs[0].disposition, RecDisposition::Blocked, "{case}");
            assert!(recs[0].name().is_none(), "{case}: no name may be reported");
            assert!(
                client_stream(&c, &h.wire).is_empty(),
                "{case}: nothing reached the server"
            );
            check_resets_both_ways(&c, &h.wire, 0);
        }
    }
}

/// RST to the client from the server with the server's next sequence number, and RST to the
/// server from the client with the client's next sequence number as the server knows it
/// (`client_forwarded` bytes after the ISN).
fn check_resets_both_ways(c: &Conn, wire: &[Vec<u8>], client_forwarded: u32) {
    check_resets(c, wire, client_forwarded, 0);
}

/// As [`check_resets_both_ways`], after the server sent `server_sent` bytes. When the client
/// has not acknowledged everything the server sent, a second RST to the client carries the
/// sequence number the client acknowledged last.
fn check_resets(c: &Conn, wire: &[Vec<u8>], client_forwarded: u32, server_sent: u32) {
    let r = rsts(wire);
    let to_server: Vec<_> = r.iter().filter(|r| r.dst == c.server).collect();
    let to_client: Vec<_> = r.iter().filter(|r| r.dst == c.client).collect();
    assert_eq!(r.len(), to_server.len() + to_client.len(), "{r:?}");
    assert_eq!(to_server.len(), 1, "one RST to the server: {r:?}");
    assert_eq!(to_server[0].src, c.client);
    assert_eq!(
        to_server[0].seq,
        c.cisn.wrapping_add(1).wrapping_add(client_forwarded)
    );
    let expected = c.sisn.wrapping_add(1).wrapping_add(server_sent);
    assert!(to_client.iter().all(|r| r.src == c.server), "{r:?}");
    assert!(
        to_client.iter().any(|r| r.seq == expected),
        "RST to the client at {expected}: {r:?}"
    );
    let allowed = if server_sent > 0 { 2 } else { 1 };
    assert!(!to_client.is_empty() && to_client.len() <= allowed, "{r:?}");
    for r in &to_client {
        assert_eq!(
            r.ack,
            Some(c.cisn.wrapping_add(1).wrapping_add(client_forwarded))
        );
    }
}

#[test]
fn hello_cut_into_one_byte_records_yields_the_true_name_or_fails_closed() {
    for (case, hello, name) in real_hellos("one_byte_records") {
        let recut = recut_records(&hello, 1);
        let (h, c, _) = run(&chunks(&recut, 1460));
        let recs = h.decisions();
        assert_eq!(recs.len(), 1, "{case}");
        match recs[0].name() {
            Some(n) => {
                assert_eq!(n, name, "{case}");
                assert_eq!(client_stream(&c, &h.wire), recut, "{case}");
            }
            None => {
                assert_eq!(recs[0].action, RecordAction::Denied, "{case}: fail closed");
                assert!(client_stream(&c, &h.wire).is_empty(), "{case}");
            }
        }
    }
}

#[test]
fn hello_cut_into_small_records_yields_the_true_name() {
    for (case, hello, name) in real_hellos("small_records") {
        let recut = recut_records(&hello, 7);
        let (h, c, _) = run(&chunks(&recut, 500));
        assert_true_name(&h, &c, &recut, &name, &case);
    }
}

#[test]
fn a_bogus_hello_with_a_bad_checksum_is_never_inspected() {
    for (case, hello, name) in real_hellos("bad_checksum_first") {
        // Bogus hello names a permitted host, real one a denied host: must deny.
        let bogus = client_hello(Some("api.openai.com"), 0);
        let denied = client_hello(Some("exfil.attacker.test"), 0);
        let mut h = Harness::new(POLICY_OPENAI);
        let c = Conn::v4(40001);
        handshake(&mut h, &c);
        assert_eq!(
            h.send(&corrupt_checksum(c.data(0, &bogus))),
            Disposition::Drop(DropReason::BadChecksum),
            "{case}"
        );
        assert_eq!(h.pipe.stats().dropped(DropReason::BadChecksum), 1);
        h.send(&c.data(0, &denied));
        assert_eq!(
            h.names(),
            vec![Some("exfil.attacker.test".to_owned())],
            "{case}"
        );
        assert_eq!(h.decisions()[0].action, RecordAction::Denied);
        assert!(client_stream(&c, &h.wire).is_empty());

        // Bogus hello names a denied host, real one is permitted: the flow goes on.
        let mut h = Harness::new(POLICY_OPENAI);
        handshake(&mut h, &c);
        h.send(&corrupt_checksum(c.data(0, &denied)));
        for (off, b) in chunks(&hello, 1460) {
            h.send(&c.data(off, &b));
        }
        assert_true_name(&h, &c, &hello, &name, &case);
    }
}

#[test]
fn checksum_offload_packets_are_inspected_without_verification() {
    let hello = client_hello(Some("api.openai.com"), 0);
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40002);
    handshake(&mut h, &c);
    let mut meta = PacketMeta {
        has_vnet: true,
        ..PacketMeta::default()
    };
    meta.vnet[0] = 0x01; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert!(meta.partial_checksum());
    let pkt = corrupt_checksum(c.data(0, &hello));
    assert_eq!(h.send_meta(&pkt, meta), Disposition::Held);
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);
    assert_eq!(h.pipe.stats().dropped(DropReason::BadChecksum), 0);
}

#[test]
fn reject_resets_both_ends_and_deny_resets_only_the_server() {
    // Reject: the client gets a RST at once.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40003);
    handshake(&mut h, &c);
    h.take_wire();
    assert_eq!(
        h.send(&c.data(0, &client_hello(Some("reject.example.net"), 0))),
        Disposition::Held
    );
    let r = h.decisions()[0].clone();
    assert_eq!(
        (r.action, r.disposition, r.reason),
        (RecordAction::Denied, RecDisposition::Blocked, Reason::Rule)
    );
    assert_eq!(r.policy.name, "reject-some");
    assert_eq!(r.activity_id, 5);
    check_resets_both_ways(&c, &h.wire, 0);
    assert_eq!(
        h.send(&c.data(0, b"more")),
        Disposition::Drop(DropReason::Cut)
    );

    // Deny: only the server is reset; the client's packets vanish.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40004);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&c.data(0, &client_hello(Some("not-allowed.test"), 0)));
    let r = rsts(&h.wire);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].dst, c.server);
    assert_eq!(r[0].src, c.client);
    assert_eq!(r[0].seq, c.cisn.wrapping_add(1));
    assert_eq!(r[0].ack, Some(c.sisn.wrapping_add(1)));
    assert_eq!(h.decisions()[0].reason, Reason::Default);
    assert_eq!(h.decisions()[0].policy.name, "default");
    assert_eq!(
        h.send(&c.data(0, b"retry")),
        Disposition::Drop(DropReason::Policy)
    );
    assert_eq!(
        h.send(&c.server_data(0, 0, b"late")),
        Disposition::Drop(DropReason::Policy)
    );
}

#[test]
fn a_deny_on_the_syn_is_silent_and_a_reject_answers_the_syn() {
    let policy = r#"
[policy]
default_action = "deny"

[addressgroups.blocked]
cidrs = ["192.0.2.0/24"]

[addressgroups.rejected]
cidrs = ["198.51.100.0/24"]

[[rules]]
name = "drop-blocked"
priority = 1
src = ["any"]
dst = ["blocked"]
action = "deny"

[[rules]]
name = "reject-rejected"
priority = 2
src = ["any"]
dst = ["rejected"]
action = "reject"
"#;
    let mut h = Harness::new(policy);
    let c = Conn::v4(40005);
    assert_eq!(h.send(&c.syn()), Disposition::Drop(DropReason::Policy));
    assert!(h.wire.is_empty());
    assert_eq!(h.decisions()[0].policy.name, "drop-blocked");
    assert_eq!(h.send(&c.syn()), Disposition::Drop(DropReason::Policy));
    assert_eq!(
        h.decisions().len(),
        1,
        "a retransmitted SYN is not a new decision"
    );

    let mut c2 = Conn::v4(40006);
    c2.server = "198.51.100.9:443".parse().unwrap();
    assert_eq!(h.send(&c2.syn()), Disposition::Drop(DropReason::Policy));
    let r = rsts(&h.wire);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].src, c2.server);
    assert_eq!(r[0].dst, c2.client);
    assert_eq!(r[0].seq, 0);
    assert_eq!(r[0].ack, Some(c2.cisn.wrapping_add(1)));
}

#[test]
fn flows_seen_mid_stream_are_decided_by_address_or_fail_closed() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40007);
    // No SYN: the verdict needs a name that will never be seen.
    let d = h.send(&c.data(1000, b"\x17\x03\x03\x00\x10 encrypted stuff"));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
    );
    assert_eq!(h.decisions()[0].reason, Reason::Midstream);
    assert_eq!(rsts(&h.wire).len(), 2);
    assert_eq!(
        h.send(&c.server_data(50, 1016, b"reply")),
        Disposition::Drop(DropReason::Cut)
    );

    // A server packet first creates nothing (the client's first data decides), and then the
    // gateway still knows who the client is.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40008);
    assert_eq!(
        h.send(&c.server_data(0, 0, b"hello")),
        Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
    );
    assert_eq!(h.pipe.active_flows(), 0);
    assert!(h.decisions().is_empty());
    h.send(&c.data(1000, b"\x17\x03\x03\x00\x02ab"));
    let r = h.decisions()[0];
    assert_eq!(r.src_endpoint.ip, c.client.ip());
    assert_eq!(r.dst_endpoint.port, 443);
    assert_eq!(r.reason, Reason::Midstream);

    // By address only, a permitted destination goes on.
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    let c = Conn::v4(40009);
    assert_eq!(h.send(&c.data(1000, b"anything")), Disposition::Forward);
    assert_eq!(
        h.send(&c.server_data(0, 1008, b"reply")),
        Disposition::Forward
    );
}

#[test]
fn a_full_flow_table_refuses_new_flows_and_keeps_established_ones() {
    let config = PipelineConfig {
        flow_capacity: 2,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_OPENAI, config);
    let a = Conn::v4(41000);
    let b = Conn::v4(41001);
    let x = Conn::v4(41002);
    handshake(&mut h, &a);
    handshake(&mut h, &b);
    let before = h.records.len();
    assert_eq!(h.send(&x.syn()), Disposition::Drop(DropReason::FlowLimit));
    let r = &h.records[before];
    assert_eq!(r.reason, Reason::FlowLimit);
    assert_eq!(r.action, RecordAction::Denied);
    let rst = rsts(&h.wire);
    assert_eq!(rst.len(), 1);
    assert_eq!(rst[0].dst, x.client);
    assert_eq!(h.pipe.stats().flow_limit, 1);
    // The established flows go on.
    assert_eq!(
        h.send(&a.data(0, &client_hello(Some("api.openai.com"), 0))),
        Disposition::Held
    );
    assert_eq!(h.send(&b.server_data(0, 0, b"x")), Disposition::Forward);
    assert_eq!(h.pipe.active_flows(), 2);
    // Once a flow expires, there is room again.
    h.send(&b.fin(0));
    h.send(&b.server_data(1, 1, &[]));
    h.advance(Duration::from_secs(3601));
    assert_eq!(h.send(&x.syn()), Disposition::Forward);
}

#[test]
fn a_table_full_of_unanswered_syns_evicts_one_for_a_new_flow() {
    for policy in [POLICY_PERMIT_ALL, POLICY_OPENAI] {
        let config = PipelineConfig {
            flow_capacity: 4,
            ..PipelineConfig::default()
        };
        let mut h = Harness::with_config(policy, config);
        // Established flows are never evicted.
        let a = Conn::v4(44000);
        handshake(&mut h, &a);
        // Three SYNs that nobody answers fill the table.
        for port in 44001..44004 {
            assert_ne!(
                h.send(&Conn::v4(port).syn()),
                Disposition::Drop(DropReason::FlowLimit)
            );
        }
        assert_eq!(h.pipe.active_flows(), 4);
        // While their SYNs may still be answered, they stay and the newcomer is refused.
        assert_eq!(
            h.send(&Conn::v4(44099).syn()),
            Disposition::Drop(DropReason::FlowLimit)
        );
        assert_eq!(h.pipe.stats().flows_evicted, 0);
        // A second later, a new connection gets in: a half-open flow made room for it.
        h.advance(Duration::from_millis(1000));
        let x = Conn::v4(44100);
        assert_ne!(h.send(&x.syn()), Disposition::Drop(DropReason::FlowLimit));
        assert_eq!(h.pipe.stats().flows_evicted, 1, "{policy}");
        assert_eq!(h.pipe.stats().flow_limit, 1);
        assert_eq!(h.pipe.active_flows(), 4);
        // The newcomer works: its handshake completes.
        assert_eq!(h.send(&x.synack()), Disposition::Forward);
        assert_eq!(h.send(&x.ack()), Disposition::Forward);
        // The evicted flow's end is recorded as such when its opening was: under permit-all
        // the SYN was decided and recorded; a flow still waiting for its name was not.
        let evicted: Vec<_> = h
            .records
            .iter()
            .filter(|r| r.end_reason == Some(EndReason::Evicted))
            .collect();
        if policy == POLICY_PERMIT_ALL {
            assert_eq!(evicted.len(), 1, "flow-end record of the evicted flow");
            assert_eq!(evicted[0].src_endpoint.port, 44001);
        } else {
            assert!(evicted.is_empty());
        }
        // Unanswered SYNs a second old keep making room; the established flow and the
        // newcomer stay.
        for port in 44200..44300 {
            h.advance(Duration::from_millis(1000));
            assert_ne!(
                h.send(&Conn::v4(port).syn()),
                Disposition::Drop(DropReason::FlowLimit)
            );
        }
        assert_eq!(h.pipe.stats().flows_evicted, 101);
        // The newcomer is still tracked: decided on its SYN under permit-all, awaiting its name
        // otherwise.
        let want = if policy == POLICY_PERMIT_ALL {
            Disposition::Forward
        } else {
            Disposition::Held
        };
        assert_eq!(h.send(&x.data(0, b"GET / HTTP/1.1\r\n")), want);
        assert_eq!(h.send(&a.server_data(0, 0, b"x")), Disposition::Forward);
    }
}

#[test]
fn a_table_full_of_established_flows_evicts_nothing() {
    let config = PipelineConfig {
        flow_capacity: 3,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_PERMIT_ALL, config);
    for port in 45000..45003 {
        handshake(&mut h, &Conn::v4(port));
    }
    assert_eq!(
        h.send(&Conn::v4(45100).syn()),
        Disposition::Drop(DropReason::FlowLimit)
    );
    assert_eq!(h.pipe.stats().flows_evicted, 0);
    assert_eq!(h.pipe.stats().flow_limit, 1);
}

#[test]
fn the_per_flow_held_bytes_bound_fails_closed() {
    let config = PipelineConfig {
        max_held_bytes_per_flow: 4096,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_OPENAI, config);
    let c = Conn::v4(42000);
    handshake(&mut h, &c);
    // A hello that claims to be 6000 bytes long never completes within 4 KiB.
    let hello = client_hello(Some("api.openai.com"), 6000);
    let mut last = Disposition::Forward;
    for (off, b) in chunks(&hello, 1000) {
        last = h.send(&c.data(off, &b));
        if last != Disposition::Held {
            break;
        }
    }
    assert_eq!(
        last,
        Disposition::Drop(DropReason::FailClosed(Reason::InspectOverflow))
    );
    assert_eq!(h.decisions()[0].reason, Reason::InspectOverflow);
    assert_eq!(h.decisions()[0].severity_id, 4);
    assert!(client_stream(&c, &h.wire).is_empty());
    check_resets_both_ways(&c, &h.wire, 0);
    assert_eq!(h.pipe.stats().held_bytes_now, 0, "held bytes freed");
}

#[test]
fn the_total_held_bytes_bound_fails_closed() {
    let config = PipelineConfig {
        max_held_bytes_total: 7000,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_OPENAI, config);
    let hello = client_hello(Some("api.openai.com"), 3000);
    let a = Conn::v4(43000);
    let b = Conn::v4(43001);
    handshake(&mut h, &a);
    handshake(&mut h, &b);
    assert_eq!(h.send(&a.data(0, &hello[..1400])), Disposition::Held);
    assert_eq!(h.send(&a.data(1400, &hello[1400..2800])), Disposition::Held);
    assert_eq!(
        h.send(&b.data(0, &hello[..1400])),
        Disposition::Drop(DropReason::FailClosed(Reason::MemoryPressure))
    );
    assert_eq!(h.decisions()[0].reason, Reason::MemoryPressure);
    // The first flow completes.
    assert_eq!(h.send(&a.data(2800, &hello[2800..])), Disposition::Held);
    assert_eq!(h.names().last().unwrap().as_deref(), Some("api.openai.com"));
    assert!(h.pipe.stats().held_bytes_peak <= 7000);
}

#[test]
fn the_inspection_timeout_fails_closed() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(44000);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    assert_eq!(h.send(&c.data(0, &hello[..20])), Disposition::Held);
    h.advance(Duration::from_millis(4999));
    assert!(h.decisions().is_empty());
    assert_eq!(
        h.pipe.next_timeout(),
        Some(h.now + Duration::from_millis(1))
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.decisions()[0].reason, Reason::InspectTimeout);
    check_resets_both_ways(&c, &h.wire, 0);
    assert_eq!(
        h.send(&c.data(20, &hello[20..])),
        Disposition::Drop(DropReason::Cut)
    );
}

#[test]
fn a_retransmission_that_disagrees_with_inspected_bytes_cuts_the_flow() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(45000);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    h.send(&c.data(0, &hello));
    assert_eq!(h.decisions()[0].action, RecordAction::Allowed);
    // The same range again, with another name: the server may not have received the first one.
    let evil = client_hello(Some("evil.attacker.com"), 0);
    let d = h.send(&c.data(0, &evil[..hello.len().min(evil.len())]));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::AmbiguousOverlap))
    );
    assert_eq!(
        h.decisions().last().unwrap().reason,
        Reason::AmbiguousOverlap
    );
    // An identical retransmission is fine on another flow, and the bytes are freed after the ACK.
    let mut h = Harness::new(POLICY_OPENAI);
    handshake(&mut h, &c);
    h.send(&c.data(0, &hello));
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Forward);
    assert!(h.pipe.stats().held_bytes_now > 0);
    h.send(&c.server_data(0, hello.len() as u32, b""));
    assert_eq!(
        h.send(&c.data(hello.len() as u32, &[0x17, 3, 3, 0, 1, 0])),
        Disposition::Forward
    );
    h.send(&c.server_data(0, hello.len() as u32 + 6, b""));
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

#[test]
fn a_second_hello_with_a_denied_name_cuts_the_flow() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(46000);
    handshake(&mut h, &c);
    let first = client_hello(Some("api.openai.com"), 0);
    h.send(&c.data(0, &first));
    h.send(&c.server_data(0, first.len() as u32, b"\x16\x03\x03\x00\x04retry"));
    let second = client_hello(Some("exfil.attacker.test"), 0);
    let d = h.send(&c.data(first.len() as u32, &second));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::SecondHello))
    );
    assert_eq!(
        h.names(),
        vec![
            Some("api.openai.com".to_owned()),
            Some("exfil.attacker.test".to_owned())
        ]
    );
    assert_eq!(h.decisions()[1].reason, Reason::SecondHello);
    assert_eq!(h.pipe.stats().second_hellos, 1);
    check_resets(&c, &h.wire, first.len() as u32, 10);

    // A second hello with an allowed name is recorded and the flow goes on.
    let mut h = Harness::new(POLICY_OPENAI);
    handshake(&mut h, &c);
    h.send(&c.data(0, &first));
    let again = client_hello(Some("www.example.com"), 0);
    assert_eq!(
        h.send(&c.data(first.len() as u32, &again)),
        Disposition::Forward
    );
    assert_eq!(h.names().len(), 2);
    // After application data, nothing more is parsed.
    let off = (first.len() + again.len()) as u32;
    assert_eq!(
        h.send(&c.data(off, &[0x17, 3, 3, 0, 2, 1, 2])),
        Disposition::Forward
    );
    let third = client_hello(Some("exfil.attacker.test"), 0);
    assert_eq!(h.send(&c.data(off + 7, &third)), Disposition::Forward);
    assert_eq!(h.names().len(), 2);
}

#[test]
fn tcp_fast_open_data_on_the_syn() {
    let hello = client_hello(Some("api.openai.com"), 0);
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(47000);
    assert_eq!(h.send(&c.syn_data(&hello)), Disposition::Forward);
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);
    assert_eq!(h.send(&c.synack()), Disposition::Forward);

    // Rejected on the SYN: RST acknowledging the SYN and its data.
    let mut h = Harness::new(POLICY_OPENAI);
    let bad = client_hello(Some("reject.example.net"), 0);
    assert_eq!(
        h.send(&c.syn_data(&bad)),
        Disposition::Drop(DropReason::Policy)
    );
    let r = rsts(&h.wire);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].ack, Some(c.cisn.wrapping_add(1 + bad.len() as u32)));

    // A partial hello on the SYN: the SYN is dropped, the retry without data works.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(
        h.send(&c.syn_data(&hello[..40])),
        Disposition::Drop(DropReason::SynData)
    );
    assert_eq!(h.pipe.active_flows(), 0);
    handshake(&mut h, &c);
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Held);
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);
}

#[test]
fn data_on_the_handshake_completing_ack() {
    let hello = client_hello(Some("api.openai.com"), 0);
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(47001);
    h.send(&c.syn());
    h.send(&c.synack());
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Held);
    assert_eq!(client_stream(&c, &h.wire), hello);
}

#[test]
fn ipv6_flows_are_inspected_and_reset() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v6(48000);
    handshake(&mut h, &c);
    h.send(&c.data(0, &client_hello(Some("reject.example.net"), 0)));
    assert_eq!(h.names(), vec![Some("reject.example.net".to_owned())]);
    check_resets_both_ways(&c, &h.wire, 0);
}

#[test]
fn a_policy_update_cuts_flows_it_now_denies() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(49000);
    let keep = Conn::v4(49001);
    handshake(&mut h, &c);
    handshake(&mut h, &keep);
    let hello = client_hello(Some("api.openai.com"), 0);
    h.send(&c.data(0, &hello));
    h.send(&keep.data(0, &client_hello(Some("www.example.com"), 0)));
    h.send(&c.server_data(0, hello.len() as u32, b"response"));
    h.take_wire();
    let next = POLICY_OPENAI.replace(r#""api.openai.com", "#, "");
    h.store.store(policy(&next, 2));
    h.reevaluate();
    let last = (*h.decisions().last().unwrap()).clone();
    assert_eq!(last.reason, Reason::PolicyUpdate);
    assert_eq!(last.policy.version, 2);
    assert_eq!(last.name(), Some("api.openai.com"));
    check_resets(&c, &h.wire, hello.len() as u32, 8);
    assert_eq!(h.pipe.stats().policy_update_cuts, 1);
    // A second call without a change is a no-op.
    h.reevaluate();
    assert_eq!(h.pipe.stats().policy_update_cuts, 1);
}

/// The controller's numbering and the local file's meet: a new policy that carries the version
/// of the one it replaces is still a new policy, and the flows are named by the right table.
#[test]
fn a_policy_update_with_the_same_version_number_still_cuts() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(49010);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    h.send(&c.data(0, &hello));
    h.take_wire();
    let next = POLICY_OPENAI.replace(r#""api.openai.com", "#, "");
    h.store.store(policy(&next, 1));
    h.reevaluate();
    let last = (*h.decisions().last().unwrap()).clone();
    assert_eq!(last.reason, Reason::PolicyUpdate);
    assert_eq!(last.policy.version, 1);
    assert_eq!(h.pipe.stats().policy_update_cuts, 1);
}

#[test]
fn udp_is_decided_per_flow_and_rejected_with_icmp() {
    let policy = r#"
[policy]
default_action = "deny"

[addressgroups.dns]
cidrs = ["192.0.2.53/32"]

[webgroups.openai]
domains = ["api.openai.com"]

[[rules]]
name = "dns"
priority = 1
src = ["any"]
dst = ["dns"]
protocol = "udp"
ports = ["53"]
action = "permit"

[[rules]]
name = "quic-openai"
priority = 2
src = ["any"]
dst = ["openai"]
protocol = "udp"
action = "permit"

[[rules]]
name = "reject-udp"
priority = 3
src = ["any"]
dst = ["any"]
protocol = "udp"
ports = ["9999"]
action = "reject"
"#;
    let mut h = Harness::new(policy);
    let client = "10.1.2.3:5353".parse().unwrap();
    let dns = "192.0.2.53:53".parse().unwrap();
    assert_eq!(h.send(&udp_packet(client, dns, b"q")), Disposition::Forward);
    assert_eq!(h.send(&udp_packet(dns, client, b"a")), Disposition::Forward);
    let quic = "192.0.2.99:443".parse().unwrap();
    assert_eq!(
        h.send(&udp_packet(client, quic, b"initial")),
        Disposition::Drop(DropReason::Policy)
    );
    assert_eq!(h.decisions().last().unwrap().reason, Reason::NoSni);
    let rej = "192.0.2.98:9999".parse().unwrap();
    assert_eq!(
        h.send(&udp_packet(client, rej, b"x")),
        Disposition::Drop(DropReason::Policy)
    );
    let icmp = h.wire.last().unwrap();
    assert_eq!(icmp[0] >> 4, 4);
    assert_eq!(icmp[9], 1, "ICMP");
    assert_eq!(icmp[20], 3, "destination unreachable");
    assert_eq!(&icmp[16..20], &[10, 1, 2, 3], "to the client");
}

#[test]
fn log_only_forwards_and_records_detected() {
    let text = POLICY_OPENAI.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    );
    let mut h = Harness::new(&text);
    let c = Conn::v4(50000);
    handshake(&mut h, &c);
    let hello = client_hello(Some("not-allowed.test"), 0);
    h.send(&c.data(0, &hello));
    let r = h.decisions()[0];
    assert_eq!(
        (r.action, r.disposition),
        (RecordAction::Denied, RecDisposition::Detected)
    );
    assert_eq!(r.name(), Some("not-allowed.test"));
    assert_eq!(client_stream(&c, &h.wire), hello);
    assert!(rsts(&h.wire).is_empty());
    assert_eq!(h.pipe.stats().held, 0, "log-only never holds a packet");

    // Bounds do not apply either: a hello that never completes just passes.
    let c = Conn::v4(50001);
    handshake(&mut h, &c);
    assert_eq!(h.send(&c.data(0, &hello[..10])), Disposition::Forward);
    h.advance(Duration::from_secs(6));
    assert!(rsts(&h.wire).is_empty());
}

#[test]
fn nameless_flows_get_the_same_reason_in_both_modes() {
    let log_only = POLICY_OPENAI.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    );
    let cases: [(&str, Vec<u8>, Reason); 3] = [
        (
            "not TLS",
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            Reason::NotTls,
        ),
        ("hello without SNI", client_hello(None, 0), Reason::NoSni),
        (
            "HTTP without Host",
            b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n".to_vec(),
            Reason::NoSni,
        ),
    ];
    for (what, payload, reason) in cases {
        let mut reported = Vec::new();
        for (mode, text, disposition) in [
            ("enforce", POLICY_OPENAI, RecDisposition::Blocked),
            ("log-only", log_only.as_str(), RecDisposition::Detected),
        ] {
            let mut h = Harness::new(text);
            let c = Conn::v4(50500);
            handshake(&mut h, &c);
            h.send(&c.data(0, &payload));
            let d = h.decisions();
            assert_eq!(d.len(), 1, "{what}, {mode}: {:?}", h.records);
            assert_eq!(d[0].disposition, disposition, "{what}, {mode}");
            assert_eq!(d[0].name(), None, "{what}, {mode}");
            reported.push((d[0].action, d[0].reason, d[0].policy.name.clone()));
        }
        assert_eq!(reported[0], reported[1], "{what}: enforce vs log-only");
        assert_eq!(reported[0].1, reason, "{what}");
    }
}

#[test]
fn idle_flows_expire_with_a_flow_end_record() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(51000);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    h.send(&c.data(0, &hello));
    h.advance(Duration::from_secs(2));
    h.send(&c.server_data(0, hello.len() as u32, b"hello back"));
    h.advance(Duration::from_secs(3599));
    assert_eq!(h.pipe.active_flows(), 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.pipe.active_flows(), 0);
    let end = h.records.last().unwrap();
    assert!(end.is_flow_end());
    assert_eq!(end.activity_id, 2);
    assert_eq!(end.end_reason, Some(EndReason::IdleTimeout));
    let t = end.traffic.unwrap();
    assert_eq!((t.packets_out, t.packets_in), (3, 2));
    assert_eq!(t.bytes_out, (40 + 40 + 40 + hello.len()) as u64);
    assert_eq!(end.duration, Some(2000));
    assert_eq!(end.tls.as_ref().unwrap().sni, "api.openai.com");
    assert!(h.pipe.next_timeout().is_none());
}

#[test]
fn tcp_fragments_are_dropped() {
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    let c = Conn::v4(52000);
    let mut p = c.syn();
    p[6] = 0x20; // more fragments
                 // The IP header checksum is now wrong too, but fragments are dropped before anything else.
    assert_eq!(h.send(&p), Disposition::Drop(DropReason::Fragment));
}

#[test]
fn a_client_reset_during_inspection_does_not_open_the_flow() {
    let denied = client_hello(Some("exfil.attacker.test"), 0);
    // SYN, RST, then the same SYN again and a denied hello: the new connection is inspected.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(53000);
    h.send(&c.syn());
    h.send(&tcp_packet(
        c.client,
        c.server,
        c.cisn.wrapping_add(1),
        0,
        RST,
        &[],
    ));
    handshake(&mut h, &c);
    h.send(&c.data(0, &denied));
    assert_eq!(h.decisions()[0].action, RecordAction::Denied);
    assert!(client_stream(&c, &h.wire).is_empty());

    // RST in the middle of the handshake, then data without a new SYN: still held and inspected.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(53001);
    handshake(&mut h, &c);
    h.send(&tcp_packet(
        c.client,
        c.server,
        c.cisn.wrapping_add(1),
        0,
        RST,
        &[],
    ));
    assert_eq!(h.send(&c.data(0, &denied)), Disposition::Held);
    assert_eq!(h.decisions()[0].action, RecordAction::Denied);
    assert!(client_stream(&c, &h.wire).is_empty());
}

#[test]
fn a_new_connection_on_the_same_ports_is_decided_afresh() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(54000);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    h.send(&c.data(0, &hello));
    let end = hello.len() as u32;
    h.send(&c.fin(end));
    h.send(&c.server_data(0, end + 1, &[]));
    h.send(&tcp_packet(
        c.server,
        c.client,
        c.sisn.wrapping_add(1),
        c.cisn.wrapping_add(2 + end),
        FIN | ACK,
        &[],
    ));
    // Port reuse with a new ISN: the new connection must be inspected.
    let c2 = Conn {
        cisn: 0x5000_0000,
        sisn: 0x6000_0000,
        ..c
    };
    handshake(&mut h, &c2);
    assert_eq!(
        h.send(&c2.data(0, &client_hello(Some("exfil.attacker.test"), 0))),
        Disposition::Held
    );
    let names = h.names();
    assert_eq!(
        names,
        vec![
            Some("api.openai.com".to_owned()),
            Some("exfil.attacker.test".to_owned())
        ]
    );
    assert_eq!(h.decisions()[1].action, RecordAction::Denied);
    let end_record = h
        .records
        .iter()
        .find(|r| r.is_flow_end())
        .expect("flow end of the first");
    assert_eq!(end_record.end_reason, Some(EndReason::Fin));
}

#[test]
fn icmp_errors_follow_the_flow_they_quote() {
    let policy = r#"
[policy]
default_action = "deny"

[addressgroups.web]
cidrs = ["192.0.2.0/24"]

[[rules]]
name = "web"
priority = 1
src = ["any"]
dst = ["web"]
protocol = "tcp"
action = "permit"
"#;
    let mut h = Harness::new(policy);
    let c = Conn::v4(55000);
    handshake(&mut h, &c);
    let data = c.data(0, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(h.send(&data), Disposition::Forward);
    // A router says "fragmentation needed" about that segment, to the client.
    let frag_needed = |quoted: &[u8]| {
        let mut l4 = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
        l4.extend_from_slice(&quoted[..28]);
        ip_packet("203.0.113.1".parse().unwrap(), c.client.ip(), 1, &mut l4, 2)
    };
    assert_eq!(h.send(&frag_needed(&data)), Disposition::Forward);
    // About a flow that does not exist (or is not allowed): dropped.
    let other = Conn::v4(55001);
    assert_eq!(
        h.send(&frag_needed(&other.data(0, b"x"))),
        Disposition::Drop(DropReason::Policy)
    );
    let mut denied = Conn::v4(55002);
    denied.server = "198.51.100.1:443".parse().unwrap();
    assert_eq!(h.send(&denied.syn()), Disposition::Drop(DropReason::Policy));
    assert_eq!(
        h.send(&frag_needed(&denied.syn())),
        Disposition::Drop(DropReason::Policy)
    );
}

#[test]
fn a_forged_syn_from_the_server_side_does_not_turn_the_flow_around() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(56000);
    // A SYN from the server's address and port first (forged, or a simultaneous open).
    let forged = tcp_packet(c.server, c.client, c.sisn, 0, SYN, &[]);
    h.send(&forged);
    // Then the real connection, whose hello names a denied host.
    handshake(&mut h, &c);
    let d = h.send(&c.data(0, &client_hello(Some("exfil.attacker.test"), 0)));
    assert_eq!(d, Disposition::Held);
    assert!(
        client_stream(&c, &h.wire).is_empty(),
        "the client's data was inspected"
    );
    assert_eq!(
        h.decisions().last().unwrap().name(),
        Some("exfil.attacker.test")
    );
    assert_eq!(h.decisions().last().unwrap().src_endpoint.ip, c.client.ip());

    // Server data before any SYN-ACK is held back while the verdict is pending.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(56001);
    h.send(&c.syn());
    assert_eq!(
        h.send(&c.server_data(0, 0, b"data")),
        Disposition::Drop(DropReason::OutOfState)
    );
}

#[test]
fn a_policy_update_cuts_udp_flows_without_tcp_resets() {
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    let client = "10.1.2.3:5000".parse().unwrap();
    let server = "192.0.2.1:4000".parse().unwrap();
    assert_eq!(
        h.send(&udp_packet(client, server, b"one")),
        Disposition::Forward
    );
    h.store.store(policy(POLICY_OPENAI, 2));
    h.reevaluate();
    assert_eq!(h.decisions().last().unwrap().reason, Reason::PolicyUpdate);
    assert!(rsts(&h.wire).is_empty());
    assert_ne!(
        h.send(&udp_packet(client, server, b"two")),
        Disposition::Forward
    );
}

/// Regression (found by the `pipeline` fuzz target): a hole in the held bytes, overlapping
/// segments past it, and finally the segment that fills the hole. The held-bytes counter must
/// still match what the flow really holds, so that it returns to zero when the flow ends (a
/// drifting counter would turn into false `memory_pressure` denies over time). Debug builds also
/// check this after every packet.
#[test]
fn held_bytes_are_accounted_exactly_across_holes_and_overlaps() {
    let hello = client_hello(Some("api.openai.com"), 600);
    let (mut h, c, _) = run(&[
        (0, hello[..248].to_vec()),
        (252, hello[252..273].to_vec()),
        (253, hello[253..274].to_vec()),
        (248, hello[248..269].to_vec()),
    ]);
    assert!(
        h.pipe.stats().held_bytes_now > 0,
        "the hello is still incomplete"
    );
    // The rest of the hello: the flow is decided, released and its bytes freed.
    h.send(&c.data(248, &hello[248..]));
    h.advance(Duration::from_secs(7200));
    let mut out = bulkhead_gateway::pipeline::Output::default();
    h.pipe.shutdown(h.now, &mut out);
    assert_eq!(h.pipe.active_flows(), 0);
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

fn assert_resets_both(c: &Conn, wire: &[Vec<u8>]) {
    let r = rsts(wire);
    assert!(r.iter().any(|r| r.dst == c.client), "client reset: {r:?}");
    assert!(r.iter().any(|r| r.dst == c.server), "server reset: {r:?}");
}

fn get(host: &str) -> Vec<u8> {
    format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n").into_bytes()
}

#[test]
fn a_later_request_to_a_denied_host_cuts_a_keep_alive_flow() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55000).to_port(80);
    handshake(&mut h, &c);
    let first = get("api.openai.com");
    assert_eq!(h.send(&c.data(0, &first)), Disposition::Held);
    assert_eq!(client_stream(&c, &h.wire), first, "released");
    h.send(&c.server_data(0, first.len() as u32, b"HTTP/1.1 200 OK\r\n\r\n"));
    // The same host again: passes, nothing new is recorded.
    let again = get("api.openai.com");
    let off = first.len() as u32;
    assert_eq!(h.send(&c.data(off, &again)), Disposition::Forward);
    assert_eq!(h.decisions().len(), 1);
    // Another permitted host: passes, recorded, the flow keeps its first name.
    let off = off + again.len() as u32;
    let other = get("api.anthropic.com");
    assert_eq!(h.send(&c.data(off, &other)), Disposition::Forward);
    // A denied host: the request is dropped and both ends are reset.
    let off = off + other.len() as u32;
    let before = h.wire.len();
    let d = h.send(&c.data(off, &get("exfil.attacker.test")));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
    let wire = h.wire.split_off(before);
    assert_resets_both(&c, &wire);
    let last = h.decisions().last().copied().expect("record");
    assert_eq!(last.reason, Reason::HostChanged);
    assert_eq!(last.action, RecordAction::Denied);
    assert_eq!(last.name(), Some("exfil.attacker.test"));
    assert_eq!(
        h.names(),
        vec![
            Some("api.openai.com".to_owned()),
            Some("api.anthropic.com".to_owned()),
            Some("exfil.attacker.test".to_owned())
        ]
    );
    assert_eq!(h.pipe.stats().later_requests, 3);
}

#[test]
fn a_pipelined_request_is_checked_before_anything_is_released() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55001).to_port(80);
    handshake(&mut h, &c);
    // A request with a body, and a second request to a denied host, in one segment.
    let mut both =
        b"POST /v1/x HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 28\r\n\r\n".to_vec();
    both.extend_from_slice(b"Host: exfil.attacker.test\r\n");
    both.extend_from_slice(b"\n");
    both.extend_from_slice(&get("exfil.attacker.test"));
    assert_eq!(h.send(&c.data(0, &both)), Disposition::Held);
    assert!(client_stream(&c, &h.wire).is_empty(), "nothing released");
    assert_resets_both(&c, &h.wire);
    assert_eq!(h.decisions().last().unwrap().reason, Reason::HostChanged);
}

#[test]
fn request_bodies_are_skipped_not_parsed() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55002).to_port(80);
    handshake(&mut h, &c);
    // The body looks like a request to a denied host; it is data, not a request.
    let body = get("exfil.attacker.test");
    let mut req = format!(
        "POST /v1/x HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    assert_eq!(h.send(&c.data(0, &req)), Disposition::Held);
    assert_eq!(client_stream(&c, &h.wire), req);
    let next = get("api.openai.com");
    assert_eq!(
        h.send(&c.data(req.len() as u32, &next)),
        Disposition::Forward
    );
    assert!(rsts(&h.wire).is_empty());
    assert_eq!(h.decisions().len(), 1);
}

#[test]
fn an_ambiguous_later_request_fails_closed() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55003).to_port(80);
    handshake(&mut h, &c);
    let first = get("api.openai.com");
    h.send(&c.data(0, &first));
    let smuggled =
        b"GET / HTTP/1.1\r\nHost: api.openai.com\r\nHost: exfil.attacker.test\r\n\r\n".to_vec();
    let d = h.send(&c.data(first.len() as u32, &smuggled));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::ParseError))
    );
    assert_resets_both(&c, &h.wire);
}

/// A POST with a chunked body, its chunk data holding what looks like a request.
fn chunked_post(host: &str) -> Vec<u8> {
    let inner = get("exfil.attacker.test");
    let mut req = format!(
        "POST /v1/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n",
        inner.len()
    )
    .into_bytes();
    req.extend_from_slice(&inner);
    req.extend_from_slice(b"\r\n4\r\nabcd\r\n0\r\nDigest: x\r\n\r\n");
    req
}

#[test]
fn chunked_bodies_are_followed_to_the_next_request() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55004).to_port(80);
    handshake(&mut h, &c);
    // The chunk data is data: the request inside it is not looked at.
    let first = chunked_post("api.openai.com");
    assert_eq!(h.send(&c.data(0, &first)), Disposition::Held);
    assert_eq!(client_stream(&c, &h.wire), first, "released");
    assert!(rsts(&h.wire).is_empty());
    h.send(&c.server_data(0, first.len() as u32, b"HTTP/1.1 200 OK\r\n\r\n"));
    // The request after the body is checked: a denied host cuts the flow.
    let before = h.wire.len();
    let d = h.send(&c.data(first.len() as u32, &get("exfil.attacker.test")));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
    assert_resets_both(&c, &h.wire.split_off(before));
    assert_eq!(
        h.names(),
        vec![
            Some("api.openai.com".to_owned()),
            Some("exfil.attacker.test".to_owned())
        ]
    );
}

#[test]
fn a_chunked_body_split_into_small_segments_is_followed() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55005).to_port(80);
    handshake(&mut h, &c);
    let mut stream = chunked_post("api.openai.com");
    let first_len = stream.len();
    stream.extend_from_slice(&get("exfil.attacker.test"));
    // The head arrives whole (it decides the flow); the rest in 3-byte segments, which end
    // inside size lines, CRLFs and trailers.
    let head_len = stream
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    assert_eq!(h.send(&c.data(0, &stream[..head_len])), Disposition::Held);
    let mut off = head_len;
    let mut last = Disposition::Forward;
    while off < stream.len() {
        let end = (off + 3).min(stream.len());
        last = h.send(&c.data(off as u32, &stream[off..end]));
        if off < first_len {
            assert_eq!(last, Disposition::Forward, "at {off}");
        }
        off = end;
    }
    assert_eq!(
        last,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
}

#[test]
fn ambiguous_body_framing_fails_closed() {
    // Both framings at once (request smuggling), a coding list not ending in chunked: the first
    // request of a flow is refused.
    for (port, head) in [
        (
            55006,
            "POST / HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            55007,
            "POST / HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        ),
    ] {
        let mut h = Harness::new(POLICY_OPENAI);
        let c = Conn::v4(port).to_port(80);
        handshake(&mut h, &c);
        assert_eq!(h.send(&c.data(0, head.as_bytes())), Disposition::Held);
        assert!(client_stream(&c, &h.wire).is_empty(), "nothing released");
        let last = h.decisions().last().copied().expect("record");
        assert_eq!(last.reason, Reason::ParseError, "{head:?}");
        assert_eq!(last.action, RecordAction::Denied, "{head:?}");
        assert!(!rsts(&h.wire).is_empty(), "{head:?}: the flow is reset");
    }
    // A malformed chunk after a permitted head: the flow is cut.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55008).to_port(80);
    handshake(&mut h, &c);
    let head = b"POST / HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(h.send(&c.data(0, head)), Disposition::Held);
    let d = h.send(&c.data(head.len() as u32, b"5\nhello\r\n0\r\n\r\n"));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::ParseError))
    );
    assert_resets_both(&c, &h.wire);
    let last = h.decisions().last().copied().expect("record");
    assert_eq!(last.reason, Reason::ParseError);
    assert_eq!(last.action, RecordAction::Denied);
}

#[test]
fn the_client_hello_inside_a_connect_tunnel_is_checked() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55009).to_port(80);
    handshake(&mut h, &c);
    let connect = b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n";
    assert_eq!(h.send(&c.data(0, connect)), Disposition::Held);
    assert_eq!(client_stream(&c, &h.wire), connect.to_vec(), "released");
    h.send(&c.server_data(0, connect.len() as u32, b"HTTP/1.1 200 OK\r\n\r\n"));
    // The tunnel's ClientHello names a host the policy denies: the flow is cut.
    let hello = client_hello(Some("exfil.attacker.test"), 0);
    let before = h.wire.len();
    let d = h.send(&c.data(connect.len() as u32, &hello));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::SecondHello))
    );
    assert_resets_both(&c, &h.wire.split_off(before));
    assert_eq!(
        h.names(),
        vec![
            Some("api.openai.com".to_owned()),
            Some("exfil.attacker.test".to_owned())
        ]
    );
}

#[test]
fn keep_alive_requests_are_checked_past_the_first_window() {
    // 60 requests of about 1 KiB (four times the 16 KiB window), each acknowledged by the
    // server, then one to a denied host: the window follows the connection.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55010).to_port(80);
    handshake(&mut h, &c);
    let request = |host: &str| {
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(1000)
        )
        .into_bytes()
    };
    let mut off = 0u32;
    let mut server_off = 0u32;
    for i in 0..60 {
        let r = request("api.openai.com");
        let d = h.send(&c.data(off, &r));
        assert!(
            matches!(d, Disposition::Forward | Disposition::Held),
            "request {i}: {d:?}"
        );
        off += r.len() as u32;
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        h.send(&c.server_data(server_off, off, reply));
        server_off += reply.len() as u32;
    }
    assert!(rsts(&h.wire).is_empty());
    // A request with a chunked body in between, then the denied host.
    let body = chunked_post("api.openai.com");
    assert_eq!(h.send(&c.data(off, &body)), Disposition::Forward);
    off += body.len() as u32;
    h.send(&c.server_data(server_off, off, b"HTTP/1.1 200 OK\r\n\r\n"));
    let d = h.send(&c.data(off, &request("exfil.attacker.test")));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
    assert_resets_both(&c, &h.wire);
    // Nothing is held beyond what the server has not acknowledged.
    assert!(h.pipe.stats().held_bytes_now < 16 * 1024);
}

#[test]
fn a_large_body_is_skipped_and_the_request_after_it_is_checked() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55011).to_port(80);
    handshake(&mut h, &c);
    let body_len = 200 * 1024;
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    assert_eq!(h.send(&c.data(0, &head)), Disposition::Held);
    let mut off = head.len() as u32;
    // The body in 1400-byte segments, the server acknowledging as it goes.
    let chunk = vec![b'x'; 1400];
    let end = off + body_len as u32;
    while off < end {
        let n = chunk.len().min((end - off) as usize);
        assert_eq!(h.send(&c.data(off, &chunk[..n])), Disposition::Forward);
        off += n as u32;
        h.send(&c.server_data(0, off, b""));
    }
    let d = h.send(&c.data(off, &get("exfil.attacker.test")));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
}

#[test]
fn a_retransmitted_later_request_must_carry_the_same_bytes() {
    // Past the first window, a later request the gateway inspected and the server has not yet
    // acknowledged: a retransmission that names another host is an evasion attempt.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55012).to_port(80);
    handshake(&mut h, &c);
    let mut off = 0u32;
    for _ in 0..20 {
        let r = get("api.openai.com");
        h.send(&c.data(off, &r));
        off += r.len() as u32;
        h.send(&c.server_data(0, off, b""));
    }
    // A request with a 17,000-byte body moves the stream past 16 KiB; acknowledged as it goes.
    let mut post =
        b"POST / HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 17000\r\n\r\n".to_vec();
    post.resize(post.len() + 17000, b'x');
    for piece in post.chunks(1400) {
        h.send(&c.data(off, piece));
        off += piece.len() as u32;
        h.send(&c.server_data(0, off, b""));
    }
    let first = get("api.anthropic.com");
    assert_eq!(h.send(&c.data(off, &first)), Disposition::Forward);
    let forged = get("api.anthropic.xyz");
    assert_eq!(first.len(), forged.len());
    let d = h.send(&c.data(off, &forged));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::AmbiguousOverlap))
    );
}

/// Metadata that says the checksum is left to offload: the big synthetic segments below are
/// sent as a TSO-capable TUN delivers them, and patched in place rather than rebuilt.
fn offload_meta() -> PacketMeta {
    let mut meta = PacketMeta {
        has_vnet: true,
        ..PacketMeta::default()
    };
    meta.vnet[0] = 0x01; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    meta
}

/// Sends `len` bytes of request body from stream offset `off` in 64,000-byte segments (larger
/// than the watch window), the server acknowledging each; returns the offset after them.
fn send_body(h: &mut Harness, c: &Conn, mut off: u32, len: u64) -> u32 {
    const SEG: usize = 64_000;
    let mut pkt = c.data(0, &vec![b'x'; SEG]);
    let mut left = len;
    while left > 0 {
        let n = SEG.min(left as usize);
        if n < SEG {
            pkt = c.data(0, &vec![b'x'; n]);
        }
        // Sequence number: IPv4 header (20 bytes), then TCP offset 4.
        let seq = c.cisn.wrapping_add(1).wrapping_add(off);
        pkt[24..28].copy_from_slice(&seq.to_be_bytes());
        let d = h.send_meta(&pkt, offload_meta());
        assert_eq!(d, Disposition::Forward, "body at {off}");
        off = off.wrapping_add(n as u32);
        left -= n as u64;
        h.send(&c.server_data(0, off, b""));
        h.wire.clear();
    }
    off
}

#[test]
fn body_segments_larger_than_the_window_are_skipped_once_the_head_is_acknowledged() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55013).to_port(80);
    handshake(&mut h, &c);
    let body_len = 1_000_000u64;
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    assert_eq!(h.send(&c.data(0, &head)), Disposition::Held);
    h.send(&c.server_data(0, head.len() as u32, b""));
    let off = send_body(&mut h, &c, head.len() as u32, body_len);
    assert!(h.pipe.stats().held_bytes_now < 16 * 1024);
    let d = h.send(&c.data(off, &get("exfil.attacker.test")));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
}

#[test]
fn the_watch_outlasts_the_range_of_sequence_offsets() {
    // More than 2 GiB of request bodies on one connection (sequence offsets from the first byte
    // would no longer fit 31 bits), then a request to a denied host.
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(55014).to_port(80);
    handshake(&mut h, &c);
    let mut off = 0u32;
    for _ in 0..3 {
        let body_len = 900u64 << 20;
        let head = format!(
            "PUT /v1/blob HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {body_len}\r\n\r\n"
        )
        .into_bytes();
        let d = h.send(&c.data(off, &head));
        assert!(
            matches!(d, Disposition::Held | Disposition::Forward),
            "{d:?}"
        );
        off = off.wrapping_add(head.len() as u32);
        h.send(&c.server_data(0, off, b""));
        off = send_body(&mut h, &c, off, body_len);
    }
    assert!(rsts(&h.wire).is_empty());
    let d = h.send(&c.data(off, &get("exfil.attacker.test")));
    assert_eq!(
        d,
        Disposition::Drop(DropReason::FailClosed(Reason::HostChanged))
    );
}

/// The connection `c` with its client ISN moved `off` bytes on: its stream offset 0 is `c`'s
/// offset `off`, where a flow met mid-stream is anchored.
fn from_offset(c: &Conn, off: u32) -> Conn {
    Conn {
        cisn: c.cisn.wrapping_add(off),
        ..*c
    }
}

#[test]
fn a_hello_seen_mid_stream_is_inspected_as_after_a_syn() {
    for (case, hello, name) in real_hellos("mid_stream_hello") {
        for size in [hello.len(), 100, 1] {
            let mut h = Harness::new(POLICY_OPENAI);
            let c = Conn::v4(40100);
            let a = from_offset(&c, 5000);
            // No SYN: the first client data is the hello, cut into segments.
            let ds: Vec<Disposition> = chunks(&hello, size)
                .into_iter()
                .map(|(off, b)| h.send(&a.data(off, &b)))
                .collect();
            assert!(ds.iter().all(|d| *d == Disposition::Held), "{case}/{size}");
            assert_true_name(&h, &a, &hello, &name, &format!("{case}/{size}"));
        }
    }
    // The same hello naming a denied server: blocked, nothing reaches it.
    let mut h = Harness::new(POLICY_OPENAI);
    let a = from_offset(&Conn::v4(40101), 777);
    let evil = client_hello(Some("exfil.attacker.test"), 0);
    assert_eq!(h.send(&a.data(0, &evil)), Disposition::Held);
    let r = h.decisions()[0];
    assert_eq!(r.disposition, RecDisposition::Blocked);
    assert_eq!(r.tls.as_ref().unwrap().sni, "exfil.attacker.test");
    assert!(client_stream(&a, &h.wire).is_empty());
    // An HTTP request seen mid-stream is named by its Host.
    let mut h = Harness::new(POLICY_OPENAI);
    let a = from_offset(&Conn::v4(40102).to_port(80), 99);
    let req = b"GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n";
    assert_eq!(h.send(&a.data(0, req)), Disposition::Held);
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);
    assert_eq!(client_stream(&a, &h.wire), req.to_vec());
}

#[test]
fn a_hello_seen_mid_stream_gets_the_evasion_checks_of_one_after_a_syn() {
    let hello = client_hello(Some("api.openai.com"), 300);
    let at = hello
        .windows(14)
        .position(|w| w == b"api.openai.com")
        .unwrap();
    let c = Conn::v4(40200);
    let a = from_offset(&c, 3000);

    // Overlapping segments that disagree on the name.
    let mut h = Harness::new(POLICY_OPENAI);
    let mut forged = hello[at..at + 14].to_vec();
    forged[0] = b'x';
    assert_eq!(h.send(&a.data(0, &hello[..at + 14])), Disposition::Held);
    assert_eq!(
        h.send(&a.data(at as u32, &forged)),
        Disposition::Drop(DropReason::FailClosed(Reason::AmbiguousOverlap))
    );
    assert!(h.names().iter().all(Option::is_none));
    assert!(client_stream(&a, &h.wire).is_empty());
    assert_eq!(rsts(&h.wire).len(), 2);

    // Bytes before the anchor (another hello the server would read first) never pass, before
    // or after the verdict.
    let mut h = Harness::new(POLICY_OPENAI);
    let evil = client_hello(Some("exfil.attacker.test"), 0);
    assert_eq!(h.send(&a.data(0, &hello)), Disposition::Held);
    assert_eq!(h.decisions()[0].action, RecordAction::Allowed);
    let before = (evil.len() as u32).wrapping_neg();
    assert_eq!(
        h.send(&a.data(before, &evil)),
        Disposition::Drop(DropReason::OutOfState)
    );
    assert_eq!(
        h.send(&a.data(before.wrapping_sub(7), &[0x16; 20])),
        Disposition::Drop(DropReason::OutOfState)
    );
    assert_eq!(client_stream(&a, &h.wire), hello);
    // Once the server acknowledged the hello, the connection is an ordinary one.
    h.send(&a.server_data(0, hello.len() as u32, b""));
    let app = [0x17, 3, 3, 0, 1, 9];
    assert_eq!(
        h.send(&a.data(hello.len() as u32, &app)),
        Disposition::Forward
    );

    // ... and while the hello is held.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(h.send(&a.data(0, &hello[..50])), Disposition::Held);
    assert_eq!(
        h.send(&a.data(5u32.wrapping_neg(), &[1, 2, 3, 4, 5, 6, 7])),
        Disposition::Drop(DropReason::OutOfState)
    );
    assert_eq!(h.send(&a.data(50, &hello[50..])), Disposition::Held);
    assert_eq!(client_stream(&a, &h.wire), hello);

    // A server that acknowledges client bytes beyond any the gateway holds, while the hello is
    // held: its stream is not the one inspected.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(h.send(&a.data(0, &hello[..50])), Disposition::Held);
    assert_eq!(
        h.send(&a.server_data(0, 500, b"")),
        Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
    );
    assert_eq!(h.decisions()[0].reason, Reason::Midstream);
    assert!(client_stream(&a, &h.wire).is_empty());
    // An acknowledgment of bytes it holds (a capture shows those: the server had them) is not.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(h.send(&a.data(0, &hello[..50])), Disposition::Held);
    assert_eq!(h.send(&a.server_data(0, 50, b"")), Disposition::Forward);
    assert_eq!(h.send(&a.data(50, &hello[50..])), Disposition::Held);
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);

    // A second hello with a denied name cuts the flow.
    let mut h = Harness::new(POLICY_OPENAI);
    h.send(&a.data(0, &hello));
    let second = client_hello(Some("exfil.attacker.test"), 0);
    assert_eq!(
        h.send(&a.data(hello.len() as u32, &second)),
        Disposition::Drop(DropReason::FailClosed(Reason::SecondHello))
    );

    // The per-flow bound, and the time bound.
    let config = PipelineConfig {
        max_held_bytes_per_flow: 256,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_OPENAI, config);
    assert_eq!(
        h.send(&a.data(0, &hello)),
        Disposition::Drop(DropReason::FailClosed(Reason::InspectOverflow))
    );
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(h.send(&a.data(0, &hello[..40])), Disposition::Held);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.decisions()[0].reason, Reason::InspectTimeout);
    assert!(client_stream(&a, &h.wire).is_empty());

    // The middle of a hello (its first segment lost) names nothing: decided as before.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(
        h.send(&a.data(100, &hello[100..])),
        Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
    );
    // A hello from the side the ports make the server does not anchor a flow.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(
        h.send(&a.server_data(0, 0, &hello)),
        Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
    );
    assert_eq!(h.pipe.active_flows(), 0);
    // A bad checksum never anchors.
    let mut h = Harness::new(POLICY_OPENAI);
    assert_eq!(
        h.send(&corrupt_checksum(a.data(0, &hello))),
        Disposition::Drop(DropReason::BadChecksum)
    );
    assert_eq!(h.pipe.active_flows(), 0);
}

#[test]
fn a_flow_first_seen_at_its_syn_ack_is_inspected_as_after_a_syn() {
    let hello = client_hello(Some("api.openai.com"), 0);
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(40300);
    assert_eq!(h.send(&c.synack()), Disposition::Forward);
    assert_eq!(h.send(&c.ack()), Disposition::Forward);
    assert_eq!(h.send(&c.data(0, &hello[..30])), Disposition::Held);
    assert_eq!(h.send(&c.data(30, &hello[30..])), Disposition::Held);
    assert_true_name(&h, &c, &hello, "api.openai.com", "syn-ack first");
    let r = h.decisions()[0];
    assert_eq!(r.src_endpoint.port, 40300);
    assert_eq!(r.dst_endpoint.port, 443);

    // Denied by name: both ends reset with the sequence numbers the SYN-ACK gave.
    let mut h = Harness::new(POLICY_OPENAI);
    h.send(&c.synack());
    let evil = client_hello(Some("reject.example.net"), 0);
    h.send(&c.data(0, &evil));
    assert_eq!(h.decisions()[0].disposition, RecDisposition::Blocked);
    check_resets_both_ways(&c, &h.wire, 0);

    // Permitted by address: watched from the first client byte, so the record has the name.
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    h.send(&c.synack());
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Forward);
    h.send(&c.fin(hello.len() as u32));
    h.send(&c.server_data(0, hello.len() as u32 + 1, b""));
    h.advance(Duration::from_secs(4000));
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);
}

#[test]
fn a_flow_met_mid_stream_and_permitted_by_address_records_its_name() {
    let hello = client_hello(Some("api.openai.com"), 0);
    let a = from_offset(&Conn::v4(40400), 1234);
    // The client's ACK first, then its hello.
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    assert_eq!(h.send(&a.ack()), Disposition::Forward);
    assert_eq!(h.send(&a.data(0, &hello)), Disposition::Forward);
    h.advance(Duration::from_secs(4000));
    assert_eq!(h.names(), vec![Some("api.openai.com".to_owned())]);
    // Application data first: no name, one record.
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    assert_eq!(h.send(&a.ack()), Disposition::Forward);
    assert_eq!(
        h.send(&a.data(0, &[0x17, 3, 3, 0, 3, 1, 2, 3])),
        Disposition::Forward
    );
    h.advance(Duration::from_secs(4000));
    assert_eq!(h.names(), vec![None]);
}

#[test]
fn a_server_name_that_is_not_a_host_name_is_recorded_and_never_matched() {
    // A webgroup that lists the literal: it must still not match.
    let policy = r#"
[policy]
default_action = "deny"

[webgroups.lit]
domains = ["api.openai.com", "192.0.2.10"]

[[rules]]
name = "allow-lit"
priority = 1
src = ["any"]
dst = ["lit"]
protocol = "tcp"
action = "permit"
log = true
"#;
    let c = Conn::v4(40500);
    for (sent, recorded) in [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8::1", "2001:db8::1"),
        ("api.openai.com\u{1}x", "api.openai.com\\x01x"),
    ] {
        let mut h = Harness::new(policy);
        handshake(&mut h, &c);
        let hello = client_hello(Some(sent), 0);
        assert_eq!(h.send(&c.data(0, &hello)), Disposition::Held, "{sent}");
        let r = h.decisions()[0];
        assert_eq!(r.reason, Reason::SniNotHostname, "{sent}");
        assert_eq!(r.disposition, RecDisposition::Blocked, "{sent}");
        assert_eq!(r.tls.as_ref().unwrap().sni, recorded, "{sent}");
        assert!(r.dst_endpoint.hostname.is_none(), "{sent}");
        assert!(r.dst_groups.is_empty(), "{sent}: {:?}", r.dst_groups);
        assert!(client_stream(&c, &h.wire).is_empty(), "{sent}");
    }
    // A long name is cut.
    let long = "1.".repeat(200) + "1";
    let mut h = Harness::new(policy);
    handshake(&mut h, &c);
    h.send(&c.data(0, &client_hello(Some(&long), 0)));
    let sni = &h.decisions()[0].tls.as_ref().unwrap().sni;
    assert!(sni.ends_with("...") && sni.len() == 258, "{sni}");
    // Permitted by address: the flow goes on, and the record says what was sent.
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    handshake(&mut h, &c);
    assert_eq!(
        h.send(&c.data(0, &client_hello(Some("192.0.2.10"), 0))),
        Disposition::Forward
    );
    h.advance(Duration::from_secs(4000));
    let r = h.decisions()[0];
    assert_eq!(r.reason, Reason::Rule);
    assert_eq!(r.tls.as_ref().unwrap().sni, "192.0.2.10");
    // An HTTP Host that is an IP literal.
    let mut h = Harness::new(policy);
    let c = c.to_port(80);
    handshake(&mut h, &c);
    h.send(&c.data(0, b"GET / HTTP/1.1\r\nHost: 192.0.2.10:80\r\n\r\n"));
    let r = h.decisions()[0];
    assert_eq!(r.reason, Reason::SniNotHostname);
    assert_eq!(r.http.as_ref().unwrap().host, "192.0.2.10");
    assert_eq!(r.disposition, RecDisposition::Blocked);
}

/// Permits mail to `mail.example.com` on the mail ports; everything else is denied.
const POLICY_MAIL: &str = r#"
[policy]
default_action = "deny"

[webgroups.mail]
domains = ["mail.example.com"]

[[rules]]
name = "allow-mail"
priority = 1
src = ["any"]
dst = ["mail"]
protocol = "tcp"
ports = ["25", "587", "143", "110"]
action = "permit"
log = true
"#;

/// Plays a STARTTLS dialogue: the server greets, each client line gets an answer, then the
/// client's hello naming `name` in two segments. Returns the dispositions of the client's lines
/// and of the hello's segments.
fn starttls_dialogue(
    h: &mut Harness,
    c: &Conn,
    lines: &[&[u8]],
    hello: &[u8],
) -> (Vec<Disposition>, Vec<Disposition>) {
    handshake(h, c);
    let mut soff = 0u32;
    let mut coff = 0u32;
    let greet = b"220 mx.example.net ESMTP\r\n";
    assert_eq!(
        h.send(&c.server_data(soff, coff, greet)),
        Disposition::Forward
    );
    soff += greet.len() as u32;
    let mut ds = Vec::new();
    for line in lines {
        ds.push(h.send(&c.data(coff, line)));
        coff += line.len() as u32;
        let answer = b"250 OK\r\n";
        h.send(&c.server_data(soff, coff, answer));
        soff += answer.len() as u32;
    }
    let half = hello.len() / 2;
    let hs = vec![
        h.send(&c.data(coff, &hello[..half])),
        h.send(&c.data(coff + half as u32, &hello[half..])),
    ];
    (ds, hs)
}

#[test]
fn starttls_dialogues_are_followed_to_the_client_hello() {
    let hello = client_hello(Some("mail.example.com"), 200);
    for (port, lines) in [
        (
            25u16,
            vec![&b"EHLO client.example.org\r\n"[..], b"STARTTLS\r\n"],
        ),
        (587, vec![&b"EHLO [10.1.2.3]\r\n"[..], b"STARTTLS\r\n"]),
        (143, vec![&b"a1 CAPABILITY\r\n"[..], b"a2 STARTTLS\r\n"]),
        (110, vec![&b"CAPA\r\n"[..], b"STLS\r\n"]),
    ] {
        let mut h = Harness::new(POLICY_MAIL);
        let c = Conn::v4(41000).to_port(port);
        let (ds, hs) = starttls_dialogue(&mut h, &c, &lines, &hello);
        assert!(ds.iter().all(|d| *d == Disposition::Held), "{port}: {ds:?}");
        assert_eq!(hs, vec![Disposition::Held; 2], "{port}");
        assert_eq!(
            h.names(),
            vec![Some("mail.example.com".to_owned())],
            "{port}"
        );
        let r = h.decisions()[0];
        assert_eq!(r.disposition, RecDisposition::Allowed, "{port}");
        assert_eq!(r.tls.as_ref().unwrap().sni, "mail.example.com");
        // The server got the dialogue and the hello, in order.
        let mut want: Vec<u8> = lines.concat();
        want.extend_from_slice(&hello);
        assert_eq!(client_stream(&c, &h.wire), want, "{port}");
        assert!(rsts(&h.wire).is_empty());
        assert_eq!(
            h.pipe.stats().held_bytes_now,
            h.pipe.stats().held_bytes_now.min(hello.len() + 64)
        );
    }

    // A name the policy does not permit: the negotiation went through, the hello does not.
    let mut h = Harness::new(POLICY_MAIL);
    let c = Conn::v4(41001).to_port(25);
    let evil = client_hello(Some("exfil.attacker.test"), 0);
    let lines: [&[u8]; 2] = [b"EHLO x\r\n", b"STARTTLS\r\n"];
    starttls_dialogue(&mut h, &c, &lines, &evil);
    let r = h.decisions()[0];
    assert_eq!(r.disposition, RecDisposition::Blocked);
    assert_eq!(r.tls.as_ref().unwrap().sni, "exfil.attacker.test");
    assert_eq!(client_stream(&c, &h.wire), lines.concat());
}

#[test]
fn a_mail_flow_that_does_not_upgrade_gets_nothing_past_the_negotiation() {
    let hello = client_hello(Some("mail.example.com"), 0);
    for (port, lines, passed) in [
        // Mail, credentials, an argument that could carry data, a bare LF, a line too long.
        (
            25u16,
            vec![&b"EHLO x\r\n"[..], b"MAIL FROM:<a@b.example>\r\n"],
            1,
        ),
        (25, vec![&b"EHLO x\r\n"[..], b"AUTH PLAIN AGFAYg==\r\n"], 1),
        (25, vec![&b"EHLO some secret words\r\n"[..]], 0),
        (25, vec![&b"EHLO x\n"[..]], 0),
        (143, vec![&b"a1 LOGIN bob secret\r\n"[..]], 0),
        (110, vec![&b"CAPA\r\n"[..], b"USER bob\r\n"], 1),
    ] {
        let mut h = Harness::new(POLICY_MAIL);
        let c = Conn::v4(41100).to_port(port);
        let (_, hs) = starttls_dialogue(&mut h, &c, &lines, &hello);
        let r = h.decisions()[0];
        assert_eq!(r.reason, Reason::NotTls, "{lines:?}");
        assert_eq!(r.disposition, RecDisposition::Blocked, "{lines:?}");
        assert!(r.tls.is_none());
        assert_eq!(
            client_stream(&c, &h.wire),
            lines[..passed].concat(),
            "{lines:?}"
        );
        assert!(hs.iter().all(|d| *d != Disposition::Forward));
    }
    let long = [b"EHLO ".to_vec(), vec![b'a'; 600], b"\r\n".to_vec()].concat();
    let mut h = Harness::new(POLICY_MAIL);
    let c = Conn::v4(41101).to_port(25);
    starttls_dialogue(&mut h, &c, &[&long], &hello);
    assert_eq!(h.decisions()[0].reason, Reason::NotTls);
    assert!(client_stream(&c, &h.wire).is_empty());
}

#[test]
fn the_starttls_dialogue_is_bounded_and_checked() {
    let hello = client_hello(Some("mail.example.com"), 0);
    // Eight lines pass; the ninth decides without a name.
    let noops: Vec<&[u8]> = vec![b"NOOP\r\n"; 9];
    let mut h = Harness::new(POLICY_MAIL);
    let c = Conn::v4(41200).to_port(25);
    let (ds, _) = starttls_dialogue(&mut h, &c, &noops, &hello);
    assert_eq!(ds.len(), 9);
    assert_eq!(h.decisions()[0].reason, Reason::NotTls);
    assert_eq!(client_stream(&c, &h.wire), noops[..8].concat());

    // Each line let through restarts the time bound; silence after one runs it out.
    let mut h = Harness::new(POLICY_MAIL);
    let c = Conn::v4(41201).to_port(25);
    handshake(&mut h, &c);
    for i in 0..3u32 {
        h.advance(Duration::from_secs(4));
        h.send(&c.data(i * 6, b"NOOP\r\n"));
    }
    assert!(h.decisions().is_empty());
    h.send(&c.data(18, b"STARTTLS\r\n"));
    h.advance(Duration::from_secs(6));
    assert_eq!(h.decisions()[0].reason, Reason::InspectTimeout);
    assert_eq!(client_stream(&c, &h.wire).len(), 28);

    // A retransmission of a line let through passes when it repeats it, and cuts the flow when
    // it does not.
    let mut h = Harness::new(POLICY_MAIL);
    let c = Conn::v4(41202).to_port(25);
    handshake(&mut h, &c);
    h.send(&c.data(0, b"EHLO x\r\n"));
    assert_eq!(h.send(&c.data(0, b"EHLO x\r\n")), Disposition::Forward);
    assert_eq!(
        h.send(&c.data(0, b"MAIL F\r\n")),
        Disposition::Drop(DropReason::FailClosed(Reason::AmbiguousOverlap))
    );

    // A line split across segments passes once complete, never before.
    let mut h = Harness::new(POLICY_MAIL);
    let c = Conn::v4(41203).to_port(25);
    handshake(&mut h, &c);
    assert_eq!(h.send(&c.data(0, b"EHLO cli")), Disposition::Held);
    assert!(client_stream(&c, &h.wire).is_empty());
    assert_eq!(h.send(&c.data(8, b"ent\r\nSTART")), Disposition::Held);
    // The segment that carries the end of EHLO also carries part of STARTTLS: held until the
    // whole of it is let through.
    assert!(client_stream(&c, &h.wire).starts_with(b"EHLO cli"));
    assert_eq!(h.send(&c.data(18, b"TLS\r\n")), Disposition::Held);
    assert_eq!(
        client_stream(&c, &h.wire),
        b"EHLO client\r\nSTARTTLS\r\n".to_vec()
    );
    assert!(h.decisions().is_empty());
}

#[test]
fn a_mail_flow_permitted_on_the_syn_records_the_name_after_starttls() {
    let hello = client_hello(Some("mail.example.com"), 0);
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    let c = Conn::v4(41300).to_port(587);
    let lines: [&[u8]; 2] = [b"EHLO x\r\n", b"STARTTLS\r\n"];
    let (ds, hs) = starttls_dialogue(&mut h, &c, &lines, &hello);
    assert!(ds
        .iter()
        .chain(hs.iter())
        .all(|d| *d == Disposition::Forward));
    h.advance(Duration::from_secs(4000));
    assert_eq!(h.names(), vec![Some("mail.example.com".to_owned())]);
    // And one that never upgrades has no name.
    let mut h = Harness::new(POLICY_PERMIT_ALL);
    let (_, _) = starttls_dialogue(&mut h, &c, &[b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n"], &hello);
    h.advance(Duration::from_secs(4000));
    assert_eq!(h.names(), vec![None]);
}
