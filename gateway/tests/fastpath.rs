//! The kernel fast path as the pipeline sees it (sans-IO, fake clock): which flows are handed
//! off and when, what the runtime's reports do to a flow, the take-back after a policy update
//! (RSTs built from the first packet back), and the flow-end record with the kernel's counts.

use std::time::Duration;

use bulkhead_gateway::pipeline::{
    Disposition, FastPathEvent, FastPathRequest, FlowTuple, PipelineConfig,
};
use bulkhead_gateway::record::{EndReason, Reason, Traffic};
use bulkhead_testkit::*;

fn harness(policy_text: &str) -> Harness {
    Harness::with_config(
        policy_text,
        PipelineConfig {
            fast_path: true,
            ..PipelineConfig::default()
        },
    )
}

fn tuple(c: &Conn) -> FlowTuple {
    FlowTuple {
        client: c.client,
        server: c.server,
    }
}

/// A TLS connection to `api.openai.com` up to its first application-data record and the
/// acknowledgments after it: settled. Returns the client's and the server's stream offsets.
fn settle_tls(h: &mut Harness, c: &Conn) -> (u32, u32) {
    handshake(h, c);
    let hello = client_hello(Some("api.openai.com"), 0);
    let len = hello.len() as u32;
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Held);
    let server_hello = vec![0x16, 0x03, 0x03, 0x00, 0x04, 2, 0, 0, 0];
    h.send(&c.server_data(0, len, &server_hello));
    let app = [0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3];
    assert_eq!(h.send(&c.data(len, &app)), Disposition::Forward);
    let coff = len + app.len() as u32;
    let soff = server_hello.len() as u32;
    h.send(&c.server_data(soff, coff, b"ok"));
    (coff, soff + 2)
}

fn handoffs(h: &Harness) -> Vec<FastPathRequest> {
    h.out
        .fastpath
        .iter()
        .filter(|r| matches!(r, FastPathRequest::HandOff { .. }))
        .copied()
        .collect()
}

/// Settles the flow and sends plain packets until the pipeline asks for the hand-off; returns
/// its cookie.
fn hand_off(h: &mut Harness, c: &Conn) -> (u32, u32, u32) {
    let (coff, soff) = settle_tls(h, c);
    for _ in 0..3 {
        if !handoffs(h).is_empty() {
            break;
        }
        h.send(&c.data(coff, &[]));
    }
    let reqs = handoffs(h);
    assert_eq!(reqs.len(), 1, "exactly one hand-off: {:?}", h.out.fastpath);
    assert_eq!(reqs[0].tuple(), tuple(c));
    // Asked once: later packets (still on the TUN until the runtime answers) do not ask again.
    h.send(&c.data(coff, &[]));
    h.send(&c.server_data(soff, coff, &[]));
    assert_eq!(handoffs(h).len(), 1);
    (reqs[0].cookie(), coff, soff)
}

#[test]
fn a_settled_tls_flow_is_handed_off_once_and_its_end_has_every_count() {
    let mut h = harness(POLICY_OPENAI);
    let c = Conn::v4(41000);
    let (cookie, _, _) = hand_off(&mut h, &c);
    let t = tuple(&c);
    h.pipe
        .fastpath_event(h.now, t, cookie, FastPathEvent::Offloaded, &mut h.out);
    assert_eq!(h.pipe.stats().fastpath_offloaded, 1);
    // Conntrack's counters: every packet that crossed the TUN counted twice.
    let counters = |n: u64| Traffic {
        bytes_in: n * 5_000_000,
        bytes_out: n * 20_000,
        packets_in: n * 3_500,
        packets_out: n * 400,
    };
    // Traffic reports keep an idle flow alive past its idle timeout.
    for n in 1..=3 {
        h.advance(Duration::from_secs(3000));
        h.pipe.fastpath_event(
            h.now,
            t,
            cookie,
            FastPathEvent::Counts(counters(n)),
            &mut h.out,
        );
    }
    assert_eq!(h.pipe.active_flows(), 1, "kept alive by its kernel traffic");
    let kernel = counters(4);
    // A report with another cookie (an earlier flow on these ports) is ignored.
    h.pipe.fastpath_event(
        h.now,
        t,
        cookie.wrapping_add(7),
        FastPathEvent::Ended {
            traffic: kernel,
            why: EndReason::Rst,
        },
        &mut h.out,
    );
    assert_eq!(h.pipe.active_flows(), 1);
    let before: usize = h.records.iter().filter(|r| r.is_flow_end()).count();
    assert_eq!(before, 0);
    h.pipe.fastpath_event(
        h.now,
        t,
        cookie,
        FastPathEvent::Ended {
            traffic: kernel,
            why: EndReason::Fin,
        },
        &mut h.out,
    );
    h.advance(Duration::from_millis(1));
    let ends: Vec<_> = h.records.iter().filter(|r| r.is_flow_end()).collect();
    assert_eq!(ends.len(), 1, "{:?}", h.records);
    let traffic = ends[0].traffic.expect("traffic");
    // The TUN saw the handshake and the first records (its own count, T); conntrack counted
    // those twice: the flow's traffic is C - T.
    assert!(traffic.bytes_in < kernel.bytes_in, "{traffic:?}");
    assert!(traffic.bytes_in > kernel.bytes_in - 1000, "{traffic:?}");
    assert!(traffic.packets_out < kernel.packets_out, "{traffic:?}");
    assert!(traffic.packets_out > kernel.packets_out - 10, "{traffic:?}");
    assert_eq!(ends[0].end_reason, Some(EndReason::Fin));
    assert_eq!(h.pipe.active_flows(), 0, "the ended flow left the table");
}

#[test]
fn a_policy_update_takes_a_handed_off_flow_back_and_resets_it_on_its_next_packet() {
    let mut h = harness(POLICY_OPENAI);
    let c = Conn::v4(41001);
    let (cookie, _, _) = hand_off(&mut h, &c);
    let t = tuple(&c);
    h.pipe
        .fastpath_event(h.now, t, cookie, FastPathEvent::Offloaded, &mut h.out);
    h.take_wire();
    let next = POLICY_OPENAI.replace("action = \"permit\"", "action = \"deny\"");
    h.store.store(policy(&next, 2));
    h.reevaluate();
    let cut: Vec<_> = h
        .decisions()
        .into_iter()
        .filter(|r| r.reason == Reason::PolicyUpdate)
        .collect();
    assert_eq!(cut.len(), 1, "{:?}", h.records);
    assert!(
        h.out
            .fastpath
            .contains(&FastPathRequest::TakeBack { tuple: t, cookie }),
        "{:?}",
        h.out.fastpath
    );
    // The sequence numbers the gateway knows stopped at the hand-off: no RST from them.
    assert!(rsts(&h.take_wire()).is_empty());
    // The kernel forwarded more meanwhile; the first packet back is the server's, far ahead.
    let (s_off, c_off) = (9_000_000u32, 40_000u32);
    let back = c.server_data(s_off, c_off, b"late");
    assert!(matches!(h.send(&back), Disposition::Drop(_)));
    let r = rsts(&h.take_wire());
    assert_eq!(r.len(), 2, "{r:?}");
    let to_client = r
        .iter()
        .find(|r| r.dst == c.client)
        .expect("RST to the client");
    let to_server = r
        .iter()
        .find(|r| r.dst == c.server)
        .expect("RST to the server");
    assert_eq!(to_client.seq, c.sisn.wrapping_add(1).wrapping_add(s_off));
    assert_eq!(to_server.seq, c.cisn.wrapping_add(1).wrapping_add(c_off));
    // Later packets are dropped without more RSTs.
    assert!(matches!(h.send(&back), Disposition::Drop(_)));
    assert!(rsts(&h.take_wire()).is_empty());
    // The kernel's counts complete the flow-end record.
    assert!(!h.records.iter().any(|r| r.is_flow_end()));
    let kernel = Traffic {
        bytes_in: 9_000_000,
        bytes_out: 40_000,
        packets_in: 6_000,
        packets_out: 900,
    };
    h.pipe.fastpath_event(
        h.now,
        t,
        cookie,
        FastPathEvent::TakenBack(kernel),
        &mut h.out,
    );
    h.advance(Duration::from_millis(1));
    let end = h
        .records
        .iter()
        .find(|r| r.is_flow_end())
        .expect("flow end");
    let got = end.traffic.unwrap();
    assert!(
        got.bytes_in > kernel.bytes_in - 1000 && got.bytes_in < kernel.bytes_in,
        "{got:?}"
    );
    assert_eq!(end.end_reason, Some(EndReason::Cut));
    assert_eq!(h.pipe.stats().fastpath_taken_back, 1);
}

#[test]
fn a_refused_hand_off_stays_on_the_tun_for_good() {
    let mut h = harness(POLICY_OPENAI);
    let c = Conn::v4(41002);
    let (cookie, coff, _) = hand_off(&mut h, &c);
    h.pipe
        .fastpath_event(h.now, tuple(&c), cookie, FastPathEvent::Refused, &mut h.out);
    for _ in 0..5 {
        assert_eq!(h.send(&c.data(coff, &[])), Disposition::Forward);
    }
    assert_eq!(handoffs(&h).len(), 1);
    assert_eq!(h.pipe.stats().fastpath_refused, 1);
}

#[test]
fn an_idle_handed_off_flow_is_released_when_it_expires() {
    let mut h = harness(POLICY_OPENAI);
    let c = Conn::v4(41003);
    let (cookie, _, _) = hand_off(&mut h, &c);
    let t = tuple(&c);
    h.pipe
        .fastpath_event(h.now, t, cookie, FastPathEvent::Offloaded, &mut h.out);
    h.advance(Duration::from_secs(3700));
    assert_eq!(h.pipe.active_flows(), 0);
    assert!(h
        .out
        .fastpath
        .contains(&FastPathRequest::Release { tuple: t, cookie }));
}

#[test]
fn a_plain_http_flow_under_the_request_watch_is_not_handed_off() {
    let mut h = harness(POLICY_OPENAI);
    let c = Conn::v4(41004).to_port(80);
    handshake(&mut h, &c);
    let req = b"GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n";
    let len = req.len() as u32;
    h.send(&c.data(0, req));
    for i in 0..20u32 {
        h.send(&c.server_data(i * 1000, len, &[b'x'; 1000]));
        h.send(&c.data(len, &[]));
    }
    assert!(handoffs(&h).is_empty(), "{:?}", h.out.fastpath);
}

#[test]
fn without_the_switch_nothing_is_handed_off() {
    let mut h = Harness::new(POLICY_OPENAI);
    let c = Conn::v4(41005);
    let (coff, soff) = settle_tls(&mut h, &c);
    for _ in 0..5 {
        h.send(&c.data(coff, &[]));
        h.send(&c.server_data(soff, coff, &[]));
    }
    assert!(h.out.fastpath.is_empty());
}

#[test]
fn log_only_flows_are_handed_off_once_settled_and_keep_their_records() {
    let text = POLICY_OPENAI.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    );
    let mut h = harness(&text);
    let c = Conn::v4(41006);
    handshake(&mut h, &c);
    let hello = client_hello(Some("unknown.example.net"), 0);
    let len = hello.len() as u32;
    // Log-only never holds: the hello passes, the verdict (deny, not enforced) is recorded.
    assert_eq!(h.send(&c.data(0, &hello)), Disposition::Forward);
    h.send(&c.server_data(0, len, &[0x16, 3, 3, 0, 1, 2]));
    let app = [0x17, 0x03, 0x03, 0x00, 0x01, 9];
    h.send(&c.data(len, &app));
    let coff = len + app.len() as u32;
    for _ in 0..3 {
        h.send(&c.server_data(6, coff, b"z"));
        h.send(&c.data(coff, &[]));
    }
    let d = h.decisions();
    assert_eq!(d.len(), 1, "{:?}", h.records);
    assert_eq!(handoffs(&h).len(), 1, "{:?}", h.out.fastpath);
}
