//! Randomised packet sequences against the pipeline: a real connection's packets, dropped,
//! repeated, reordered, cut short and bit-flipped at random. Whatever arrives, the pipeline must
//! not panic, must stay within its bounds, and must never let a single client byte of a denied
//! flow reach the server.

use std::time::Duration;

use bulkhead_gateway::pipeline::PipelineConfig;
use bulkhead_testkit::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    Keep,
    Drop,
    Repeat,
    SwapWithNext,
    Truncate(usize),
    Flip(usize, u8),
    Wait(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => Just(Mutation::Keep),
        1 => Just(Mutation::Drop),
        1 => Just(Mutation::Repeat),
        1 => Just(Mutation::SwapWithNext),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => any::<u16>().prop_map(Mutation::Wait),
    ]
}

/// The packets of one connection whose hello names `name`, cut into `mss`-byte segments.
fn connection(c: &Conn, name: &str, mss: usize) -> Vec<Vec<u8>> {
    let hello = client_hello(Some(name), 900);
    let mut v = vec![c.syn(), c.synack(), c.ack()];
    for (i, seg) in hello.chunks(mss).enumerate() {
        v.push(c.data((i * mss) as u32, seg));
    }
    v.push(c.server_data(0, hello.len() as u32, b"\x16\x03\x03\x00\x02hi"));
    v.push(c.data(hello.len() as u32, &[0x17, 3, 3, 0, 3, 1, 2, 3]));
    v.push(c.fin(hello.len() as u32 + 8));
    v
}

fn apply(packets: Vec<Vec<u8>>, muts: &[Mutation]) -> Vec<(Vec<u8>, u16)> {
    let mut out: Vec<(Vec<u8>, u16)> = Vec::new();
    let mut swap_pending: Option<Vec<u8>> = None;
    for (i, mut p) in packets.into_iter().enumerate() {
        let mut wait = 0;
        match &muts[i % muts.len()] {
            Mutation::Keep => {}
            Mutation::Drop => continue,
            Mutation::Repeat => out.push((p.clone(), 0)),
            Mutation::SwapWithNext => {
                swap_pending = Some(p);
                continue;
            }
            Mutation::Truncate(n) => {
                let n = n % p.len();
                p.truncate(n);
            }
            Mutation::Flip(at, bits) => {
                let at = at % p.len();
                p[at] ^= bits;
            }
            Mutation::Wait(ms) => wait = *ms,
        }
        out.push((p, wait));
        if let Some(s) = swap_pending.take() {
            out.push((s, 0));
        }
    }
    if let Some(s) = swap_pending {
        out.push((s, 0));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_denied_flow_never_leaks_and_bounds_hold(
        muts in proptest::collection::vec(mutation(), 1..30),
        mss in 1usize..700,
    ) {
        let config = PipelineConfig {
            max_held_bytes_per_flow: 2048,
            max_held_bytes_total: 8192,
            flow_capacity: 8,
            ..PipelineConfig::default()
        };
        let mut h = Harness::with_config(POLICY_OPENAI, config);
        let c = Conn::v4(40000);
        let allowed = Conn::v4(40001);
        let mut packets = connection(&c, "exfil.attacker.test", mss);
        packets.extend(connection(&allowed, "api.openai.com", 1460));
        for (p, wait) in apply(packets, &muts) {
            if wait > 0 {
                h.advance(Duration::from_millis(u64::from(wait)));
            }
            h.send(&p);
            let s = h.pipe.stats();
            prop_assert!(s.held_bytes_now <= 8192, "held {}", s.held_bytes_now);
            prop_assert!(h.pipe.active_flows() <= 8);
        }
        // Not one payload byte of the denied connection reached the server.
        let leaked = client_stream(&c, &h.wire);
        prop_assert!(leaked.is_empty(), "leaked {} bytes", leaked.len());
        // Every name recorded for the denied connection is the true one.
        for r in h.decisions() {
            if r.src_endpoint.port == c.client.port() {
                if let Some(n) = r.name() {
                    prop_assert_eq!(n, "exfil.attacker.test");
                }
            }
        }
        h.advance(Duration::from_secs(7200));
        prop_assert_eq!(h.pipe.active_flows(), 0);
        prop_assert_eq!(h.pipe.stats().held_bytes_now, 0);
    }
}
