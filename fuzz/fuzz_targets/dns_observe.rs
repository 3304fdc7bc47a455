//! Any bytes as DNS messages crossing the gateway, to the observer that learns answers
//! (`bulkhead_gateway::dns::observe`): no panic; a query is tracked from the first half, the
//! second half is offered as its answer; whatever is learned names the question asked and at
//! most the addresses the message holds; the pending table stays within its bound.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bulkhead_gateway::dns::observe::DnsObserver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let client: SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let resolver: SocketAddr = "10.9.0.2:53".parse().unwrap();
    let mut o = DnsObserver::new(vec![resolver.ip()], 8);
    let now = Instant::now();
    let (query, answer) = data.split_at(data.len() / 2);
    o.query(now, client, resolver, query);
    o.query(now, client, resolver, data);
    for at in [now, now + Duration::from_secs(11)] {
        if let Some(l) = o.response(at, resolver, client, answer) {
            assert!(!l.name.ends_with('.'));
            assert!(l.addrs.len() <= answer.len() / 4);
        }
        let _ = o.response(at, resolver, client, data);
    }
    assert!(o.pending() <= o.capacity());
});
