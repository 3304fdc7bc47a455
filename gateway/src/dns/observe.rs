//! Learning name-to-address mappings from DNS traffic that crosses the gateway.
//!
//! When the workloads' resolver is on the far side of the gateway, their queries and its
//! answers pass through it: the gateway can learn the same mapping the client is about to use,
//! which also covers honest CDN and geo-DNS answers the gateway's own lookup would not give.
//!
//! An answer is only believed when:
//!
//! - it comes from a resolver the configuration trusts (`[dns] learn_from`, by default the
//!   gateway's own resolvers): a workload that runs its own DNS server could otherwise teach the
//!   gateway that `api.openai.com` is its exfiltration host;
//! - it answers a query the gateway saw, on the same 5-tuple (client address and port, resolver
//!   address and port), with the same id and the same single question (name, type A or AAAA,
//!   class IN): an unsolicited or spoofed answer teaches nothing;
//! - it parses as a whole, is a response to a standard query with NOERROR, and is not truncated.
//!
//! Only the records on the question's own chain count: the name itself and the CNAMEs it leads
//! to; the TTL of an address is the smallest along its chain. Pending queries are bounded (the
//! oldest expire after [`PENDING_TTL`]; past [`DnsObserver::capacity`] new queries are not
//! tracked) and every outcome is counted.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

/// How long a query waits for its answer.
pub const PENDING_TTL: Duration = Duration::from_secs(10);
/// Default bound on pending queries per worker.
pub const DEFAULT_PENDING: usize = 4096;
/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PendingKey {
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
}

#[derive(Debug)]
struct Pending {
    name: Box<str>,
    qtype: RecordType,
    at: Instant,
}

/// What the observer did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObserveStats {
    /// Queries to a trusted resolver, tracked.
    pub queries: u64,
    /// Responses that matched a tracked query and taught addresses (or their absence).
    pub learned: u64,
    /// Responses with no matching tracked query (unsolicited, late, or spoofed).
    pub unsolicited: u64,
    /// Queries or responses involving a resolver not trusted for learning.
    pub untrusted: u64,
    /// Messages that did not parse, or were not a plain A / AAAA question and answer.
    pub ignored: u64,
    /// Queries not tracked because the pending table was full.
    pub pending_full: u64,
}

/// A mapping learned from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The question's name, lower case, without the trailing dot.
    pub name: String,
    /// Its addresses with their TTLs in seconds (empty: it has none of the asked type).
    pub addrs: Vec<(IpAddr, u32)>,
}

/// One worker's observer of DNS traffic. See the module docs.
#[derive(Debug)]
pub struct DnsObserver {
    trusted: Vec<IpAddr>,
    trust_any: bool,
    pending: HashMap<PendingKey, Pending, RandomState>,
    /// Tracked queries in arrival order, for expiry (stale entries are skipped).
    order: VecDeque<(PendingKey, Instant)>,
    capacity: usize,
    stats: ObserveStats,
}

impl DnsObserver {
    /// An observer that believes answers from `trusted` resolvers only, tracking at most
    /// `capacity` queries at once.
    pub fn new(trusted: Vec<IpAddr>, capacity: usize) -> DnsObserver {
        DnsObserver {
            trusted,
            trust_any: false,
            pending: HashMap::with_hasher(RandomState::default()),
            order: VecDeque::new(),
            capacity,
            stats: ObserveStats::default(),
        }
    }

    /// Believes answers from any resolver (offline replay of a capture only).
    pub fn trusting_any(mut self) -> DnsObserver {
        self.trust_any = true;
        self
    }

    /// Counters.
    pub fn stats(&self) -> ObserveStats {
        self.stats
    }

    /// Queries tracked now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Most queries tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when `server` is a resolver whose answers may be learned.
    pub fn trusts(&self, server: IpAddr) -> bool {
        self.trust_any || self.trusted.contains(&server)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.order.front() {
            if now.saturating_duration_since(at) < PENDING_TTL {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&key).is_some_and(|p| p.at == at) {
                self.pending.remove(&key);
            }
        }
    }

    /// A datagram from `client` to `server`'s port 53, forwarded.
    pub fn query(&mut self, now: Instant, client: SocketAddr, server: SocketAddr, payload: &[u8]) {
        if !self.trusts(server.ip()) {
            self.stats.untrusted += 1;
            return;
        }
        let Some((id, name, qtype)) = parse_query(payload) else {
            self.stats.ignored += 1;
            return;
        };
        self.expire(now);
        let key = PendingKey { client, server, id };
        if self.pending.len() >= self.capacity && !self.pending.contains_key(&key) {
            self.stats.pending_full += 1;
            return;
        }
        self.pending.insert(
            key,
            Pending {
                name: name.into_boxed_str(),
                qtype,
                at: now,
            },
        );
        // Bounded by the table: an entry is pushed per insert, and the table holds at most
        // `capacity`; stale entries go at the front as their time passes.
        if self.order.len() >= self.capacity.saturating_mul(2) {
            self.order.pop_front();
        }
        self.order.push_back((key, now));
        self.stats.queries += 1;
    }

    /// A datagram from `server`'s port 53 to `client`, forwarded. Returns what it teaches.
    pub fn response(
        &mut self,
        now: Instant,
        server: SocketAddr,
        client: SocketAddr,
        payload: &[u8],
    ) -> Option<Learned> {
        if !self.trusts(server.ip()) {
            self.stats.untrusted += 1;
            return None;
        }
        self.expire(now);
        let Ok(msg) = Message::from_vec(payload) else {
            self.stats.ignored += 1;
            return None;
        };
        let key = PendingKey {
            client,
            server,
            id: msg.id(),
        };
        let Some(pending) = self.pending.get(&key) else {
            self.stats.unsolicited += 1;
            return None;
        };
        let same_question = msg.queries().len() == 1 && {
            let q = &msg.queries()[0];
            q.query_type() == pending.qtype
                && q.query_class() == DNSClass::IN
                && normal_name(&q.name().to_ascii()) == *pending.name
        };
        if !same_question || msg.message_type() != MessageType::Response {
            // Not the answer to this query: leave the query pending for the real one.
            self.stats.unsolicited += 1;
            return None;
        }
        let pending = self.pending.remove(&key)?;
        if msg.op_code() != OpCode::Query || msg.truncated() {
            self.stats.ignored += 1;
            return None;
        }
        let addrs = match msg.response_code() {
            ResponseCode::NoError => chain_addresses(&msg, &pending.name, pending.qtype),
            ResponseCode::NXDomain => Vec::new(),
            _ => {
                self.stats.ignored += 1;
                return None;
            }
        };
        self.stats.learned += 1;
        Some(Learned {
            name: pending.name.into_string(),
            addrs,
        })
    }
}

/// Id, name and type of a standard query with one A or AAAA question of class IN.
fn parse_query(payload: &[u8]) -> Option<(u16, String, RecordType)> {
    let msg = Message::from_vec(payload).ok()?;
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query {
        return None;
    }
    let [q] = msg.queries() else {
        return None;
    };
    if q.query_class() != DNSClass::IN
        || !matches!(q.query_type(), RecordType::A | RecordType::AAAA)
    {
        return None;
    }
    Some((msg.id(), normal_name(&q.name().to_ascii()), q.query_type()))
}

/// A DNS name in the form names have in the policy: ASCII lower case, no trailing dot.
fn normal_name(s: &str) -> String {
    s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase()
}

/// The addresses of the asked type on the question's chain (the name, then the CNAMEs it
/// leads to), each with the smallest TTL along the way to it.
fn chain_addresses(msg: &Message, name: &str, qtype: RecordType) -> Vec<(IpAddr, u32)> {
    let mut current = name.to_owned();
    let mut ttl = u32::MAX;
    let mut out = Vec::new();
    for _ in 0..=MAX_CHAIN {
        let mut next = None;
        for r in msg.answers() {
            if normal_name(&r.name().to_ascii()) != current {
                continue;
            }
            match r.data() {
                RData::A(a) if qtype == RecordType::A => {
                    out.push((IpAddr::V4(a.0), ttl.min(r.ttl())));
                }
                RData::AAAA(a) if qtype == RecordType::AAAA => {
                    out.push((IpAddr::V6(a.0), ttl.min(r.ttl())));
                }
                RData::CNAME(c) if next.is_none() => {
                    next = Some((normal_name(&c.0.to_ascii()), r.ttl()));
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            break;
        }
        match next {
            Some((n, t)) => {
                current = n;
                ttl = ttl.min(t);
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, Record};
    use std::str::FromStr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn answer(id: u16, name: &str, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_response_code(ResponseCode::NoError)
            .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        for r in records {
            m.add_answer(r);
        }
        m.to_vec().unwrap()
    }

    fn a(name: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::A(A(ip.parse().unwrap())),
        )
    }

    const CLIENT: &str = "10.1.2.3:40000";
    const RESOLVER: &str = "10.9.0.2:53";

    #[test]
    fn learns_an_answer_to_a_query_it_saw() {
        let mut o = DnsObserver::new(vec![sa(RESOLVER).ip()], 16);
        let t = Instant::now();
        o.query(t, sa(CLIENT), sa(RESOLVER), &query(7, "API.OpenAI.com."));
        let cname = Record::from_rdata(
            Name::from_str("api.openai.com.").unwrap(),
            300,
            RData::CNAME(CNAME(Name::from_str("edge.cdn.example.").unwrap())),
        );
        let resp = answer(
            7,
            "api.openai.com.",
            vec![
                cname,
                a("edge.cdn.example.", 60, "192.0.2.10"),
                // Not on the question's chain: ignored.
                a("evil.example.", 60, "203.0.113.66"),
            ],
        );
        let l = o.response(t, sa(RESOLVER), sa(CLIENT), &resp).unwrap();
        assert_eq!(l.name, "api.openai.com");
        assert_eq!(l.addrs, vec![("192.0.2.10".parse().unwrap(), 60)]);
        assert_eq!(o.pending(), 0);
        // The same answer again: nothing is pending any more.
        assert!(o.response(t, sa(RESOLVER), sa(CLIENT), &resp).is_none());
        assert_eq!(o.stats().unsolicited, 1);
    }

    #[test]
    fn refuses_unsolicited_mismatched_and_untrusted_answers() {
        let mut o = DnsObserver::new(vec![sa(RESOLVER).ip()], 16);
        let t = Instant::now();
        let resp = answer(
            9,
            "api.openai.com.",
            vec![a("api.openai.com.", 60, "203.0.113.66")],
        );
        // No query seen.
        assert!(o.response(t, sa(RESOLVER), sa(CLIENT), &resp).is_none());
        o.query(t, sa(CLIENT), sa(RESOLVER), &query(9, "api.openai.com."));
        // Another client port, another id, another question: no.
        assert!(o
            .response(t, sa(RESOLVER), sa("10.1.2.3:40001"), &resp)
            .is_none());
        let other_id = answer(
            10,
            "api.openai.com.",
            vec![a("api.openai.com.", 60, "203.0.113.66")],
        );
        assert!(o.response(t, sa(RESOLVER), sa(CLIENT), &other_id).is_none());
        let other_q = answer(
            9,
            "evil.example.",
            vec![a("evil.example.", 60, "203.0.113.66")],
        );
        assert!(o.response(t, sa(RESOLVER), sa(CLIENT), &other_q).is_none());
        // From a resolver that is not trusted, even with a matching query.
        let mut o2 = DnsObserver::new(vec![], 16);
        o2.query(
            t,
            sa(CLIENT),
            sa("198.51.100.53:53"),
            &query(9, "api.openai.com."),
        );
        assert!(o2
            .response(t, sa("198.51.100.53:53"), sa(CLIENT), &resp)
            .is_none());
        assert_eq!(o2.stats().untrusted, 2);
        // The real answer still works after the bad ones.
        assert!(o.response(t, sa(RESOLVER), sa(CLIENT), &resp).is_some());
        // Garbage never panics.
        for n in 0..resp.len() {
            let _ = o.response(t, sa(RESOLVER), sa(CLIENT), &resp[..n]);
            o.query(t, sa(CLIENT), sa(RESOLVER), &resp[..n]);
        }
    }

    #[test]
    fn pending_queries_are_bounded_and_expire() {
        let mut o = DnsObserver::new(vec![sa(RESOLVER).ip()], 4);
        let t = Instant::now();
        for id in 0..10u16 {
            o.query(t, sa(CLIENT), sa(RESOLVER), &query(id, "a.example."));
        }
        assert_eq!(o.pending(), 4);
        assert_eq!(o.stats().pending_full, 6);
        let later = t + PENDING_TTL + Duration::from_secs(1);
        o.query(later, sa(CLIENT), sa(RESOLVER), &query(99, "a.example."));
        assert_eq!(o.pending(), 1);
        let late = answer(1, "a.example.", vec![a("a.example.", 60, "192.0.2.1")]);
        assert!(o.response(later, sa(RESOLVER), sa(CLIENT), &late).is_none());
    }
}
