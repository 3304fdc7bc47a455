//! Flow-end records are written when a TCP connection closes (FINs both ways, an accepted RST, or
//! a reset by the gateway), once per flow, whatever arrives while the entry lingers.

use std::time::Duration;

use bulkhead_gateway::pipeline::Disposition;
use bulkhead_gateway::record::{DecisionRecord, EndReason};
use bulkhead_testkit::*;

fn ends(h: &Harness) -> Vec<&DecisionRecord> {
    h.records.iter().filter(|r| r.is_flow_end()).collect()
}

/// The server's FIN, acknowledging the client's data and FIN (`client_len` bytes, then the FIN).
fn server_fin(c: &Conn, client_len: u32) -> Vec<u8> {
    tcp_packet(
        c.server,
        c.client,
        c.sisn.wrapping_add(1),
        c.cisn.wrapping_add(2 + client_len),
        FIN | ACK,
        &[],
    )
}

/// The client's last ACK, after the server's FIN.
fn last_ack(c: &Conn, client_len: u32) -> Vec<u8> {
    tcp_packet(
        c.client,
        c.server,
        c.cisn.wrapping_add(2 + client_len),
        c.sisn.wrapping_add(2),
        ACK,
        &[],
    )
}

#[test]
fn fins_both_ways_write_the_flow_end_at_once_and_only_once() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(52000);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    let len = hello.len() as u32;
    h.send(&c.data(0, &hello));
    h.advance(Duration::from_millis(250));
    h.send(&c.fin(len));
    assert!(ends(&h).is_empty(), "one FIN does not close the flow");
    h.advance(Duration::from_millis(250));
    assert_eq!(h.send(&server_fin(&c, len)), Disposition::Forward);

    // Written with the packet that closed the flow, not after the linger.
    let e = ends(&h);
    assert_eq!(e.len(), 1, "{:?}", h.records);
    let end = e[0];
    assert_eq!(end.end_reason, Some(EndReason::Fin));
    assert_eq!(end.duration, Some(500));
    assert_eq!(end.end_time, Some(1_700_000_000_500));
    let t = end.traffic.expect("traffic");
    // SYN, ACK, hello, FIN out; SYN-ACK, FIN in.
    assert_eq!((t.packets_out, t.packets_in), (4, 2));
    assert_eq!(t.bytes_out, (40 * 3 + 40 + hello.len()) as u64);
    assert_eq!(t.bytes_in, 80);
    assert_eq!(end.tls.as_ref().expect("tls").sni, "api.openai.com");

    // The last ACK, retransmitted FINs and a stray segment still pass on the lingering entry:
    // no second record, no new flow, no count.
    let created = h.pipe.stats().flows_created;
    assert_eq!(h.send(&last_ack(&c, len)), Disposition::Forward);
    assert_eq!(h.send(&server_fin(&c, len)), Disposition::Forward);
    assert_eq!(h.send(&c.fin(len)), Disposition::Forward);
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Forward);
    assert_eq!(h.pipe.stats().flows_created, created);
    assert_eq!(h.pipe.active_flows(), 1);
    // The linger ends the entry silently.
    h.advance(Duration::from_secs(31));
    assert_eq!(h.pipe.active_flows(), 0);
    assert_eq!(ends(&h).len(), 1, "{:?}", h.records);
    assert_eq!(h.records.len(), 2, "decision and flow end: {:?}", h.records);
    // So does shutdown.
    let mut out = bulkhead_gateway::pipeline::Output::default();
    h.pipe.shutdown(h.now, &mut out);
    assert!(out.records.is_empty());
}

#[test]
fn an_accepted_rst_ends_the_flow_and_a_blind_one_does_not() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(52001);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    let len = hello.len() as u32;
    h.send(&c.data(0, &hello));
    h.send(&c.server_data(0, len, b"answer"));
    // A RST far outside the server's sequence space: the client drops it; the flow goes on.
    h.send(&tcp_packet(
        c.server,
        c.client,
        c.sisn.wrapping_add(90_000),
        0,
        RST,
        &[],
    ));
    assert!(ends(&h).is_empty(), "{:?}", h.records);
    // The server's RST at its next sequence number: accepted, the flow ends here.
    h.advance(Duration::from_millis(40));
    h.send(&tcp_packet(
        c.server,
        c.client,
        c.sisn.wrapping_add(1 + 6),
        0,
        RST,
        &[],
    ));
    let e = ends(&h);
    assert_eq!(e.len(), 1, "{:?}", h.records);
    assert_eq!(e[0].end_reason, Some(EndReason::Rst));
    let t = e[0].traffic.expect("traffic");
    assert_eq!((t.packets_out, t.packets_in), (3, 4));
    // Retransmitted data of the dead connection: counted nowhere, no second record.
    h.send(&c.data(0, &hello));
    h.advance(Duration::from_secs(60));
    assert_eq!(h.pipe.active_flows(), 0);
    assert_eq!(ends(&h).len(), 1, "{:?}", h.records);
}

#[test]
fn a_client_rst_at_its_next_sequence_ends_the_flow() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(52002);
    handshake(&mut h, &c);
    let hello = client_hello(Some("api.openai.com"), 0);
    let len = hello.len() as u32;
    h.send(&c.data(0, &hello));
    h.send(&tcp_packet(
        c.client,
        c.server,
        c.cisn.wrapping_add(1 + len),
        0,
        RST,
        &[],
    ));
    let e = ends(&h);
    assert_eq!(e.len(), 1, "{:?}", h.records);
    assert_eq!(e[0].end_reason, Some(EndReason::Rst));
}

#[test]
fn flows_the_gateway_resets_or_refuses_end_at_once() {
    let mut h = Harness::new(POLICY_OPENAI);
    // Rejected on the name: both ends reset, the flow-end follows the decision.
    let c = Conn::v4(52003);
    handshake(&mut h, &c);
    let hello = client_hello(Some("reject.example.net"), 0);
    h.send(&c.data(0, &hello));
    let e = ends(&h);
    assert_eq!(e.len(), 1, "{:?}", h.records);
    assert_eq!(e[0].end_reason, Some(EndReason::Cut));
    // Retransmissions of the cut flow change nothing.
    h.send(&c.data(0, &hello));
    h.send(&c.fin(hello.len() as u32));
    h.advance(Duration::from_secs(31));
    assert_eq!(ends(&h).len(), 1, "{:?}", h.records);
    assert_eq!(h.pipe.active_flows(), 0);

    // Denied (silently dropped) on the name: the client keeps retrying, so the flow ends on its
    // idle timeout, with the retries counted.
    let c = Conn::v4(52004);
    handshake(&mut h, &c);
    let hello = client_hello(Some("exfil.attacker.test"), 0);
    h.send(&c.data(0, &hello));
    h.advance(Duration::from_secs(1));
    h.send(&c.data(0, &hello));
    assert_eq!(ends(&h).len(), 1);
    h.advance(Duration::from_secs(31));
    let e = ends(&h);
    assert_eq!(e.len(), 2, "{:?}", h.records);
    assert_eq!(e[1].traffic.expect("traffic").packets_out, 4);
}

#[test]
fn open_flows_still_end_on_idle_and_shutdown() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(52005);
    handshake(&mut h, &c);
    h.send(&c.data(0, &client_hello(Some("api.openai.com"), 0)));
    let c2 = Conn::v4(52006);
    handshake(&mut h, &c2);
    h.send(&c2.data(0, &client_hello(Some("api.openai.com"), 0)));
    h.advance(Duration::from_secs(1800));
    h.send(&c2.ack());
    h.advance(Duration::from_secs(1801));
    let e = ends(&h);
    assert_eq!(e.len(), 1, "{:?}", h.records);
    assert_eq!(e[0].end_reason, Some(EndReason::IdleTimeout));
    let mut out = bulkhead_gateway::pipeline::Output::default();
    h.pipe.shutdown(h.now, &mut out);
    let e: Vec<_> = out.records.iter().filter(|r| r.is_flow_end()).collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].end_reason, Some(EndReason::Shutdown));
}
