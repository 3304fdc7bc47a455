//! A TCP flow closed by FINs both ways is removed after the closed-state linger (its flow-end
//! record was written at the close), not after the longer opening or closing timeouts armed
//! before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use bulkhead_gateway::pipeline::{IdleTimeouts, Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_testkit::{policy, tcp_packet, ACK, FIN, SYN};

fn segment(from_client: bool, seq: u32, ack: Option<u32>, syn: bool, fin: bool) -> Vec<u8> {
    let client: SocketAddr = "10.10.1.2:40000".parse().unwrap();
    let server: SocketAddr = "10.200.0.10:443".parse().unwrap();
    let (src, dst) = if from_client {
        (client, server)
    } else {
        (server, client)
    };
    let flags = if syn { SYN } else { 0 } | if fin { FIN } else { 0 } | ack.map_or(0, |_| ACK);
    tcp_packet(src, dst, seq, ack.unwrap_or(0), flags, &[])
}

#[test]
fn fins_both_ways_arm_the_closed_linger() {
    let store = Arc::new(policy_engine::PolicyStore::new(policy(
        "[policy]\ndefault_action = \"permit\"\n",
        1,
    )));
    let closed = Duration::from_secs(2);
    let config = PipelineConfig {
        idle: IdleTimeouts {
            tcp_opening: Duration::from_secs(30),
            tcp_established: Duration::from_secs(3600),
            tcp_closing: Duration::from_secs(60),
            tcp_closed: closed,
            udp: Duration::from_secs(60),
            other: Duration::from_secs(30),
        },
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(config, store);
    let mut out = Output::default();
    let t0 = Instant::now();
    let exchange = [
        segment(true, 100, None, true, false),
        segment(false, 500, Some(101), true, false),
        segment(true, 101, Some(501), false, false),
        segment(false, 501, Some(101), false, true),
        segment(true, 101, Some(502), false, false),
        segment(true, 101, Some(502), false, true),
        segment(false, 502, Some(102), false, false),
    ];
    let mut last = t0;
    for (i, pk) in exchange.iter().enumerate() {
        last = t0 + Duration::from_millis(i as u64);
        p.process(last, pk, PacketMeta::default(), &mut out);
    }
    let next = p.next_timeout().expect("a timer is armed");
    assert!(
        next <= last + closed,
        "next timeout {:?} after the last packet, want at most {closed:?}",
        next.duration_since(last)
    );
    // Walk the timers: the entry goes once the linger has passed, without another record.
    out.records.clear();
    let mut now = next;
    for _ in 0..10 {
        p.handle_timeout(now, &mut out);
        if p.active_flows() == 0 {
            break;
        }
        now = p.next_timeout().unwrap_or(now + closed);
    }
    assert_eq!(p.active_flows(), 0);
    assert!(
        now <= last + closed + Duration::from_millis(1),
        "ended {:?} after the last packet",
        now.duration_since(last)
    );
    assert!(out.records.is_empty(), "{:?}", out.records);
}
