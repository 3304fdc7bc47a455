//! The DNS check of a name (`sni_dns_check`): does the destination address belong to the name
//! the flow was permitted by?
//!
//! The check runs at verdict time, only when the enforced verdict permits *because of the name*
//! ([`CompiledPolicy::name_check`]): the name the client sent (not the pattern it matched) is
//! looked up in the shared [`DnsCache`] (lock-free, no wait on a hit). Then:
//!
//! - the address is among the name's: the verdict stands;
//! - it is not (or the name has none): `sni_address_mismatch`, with what the name resolves to;
//! - nothing is known: the pipeline asks for a lookup ([`Output::dns_queries`], one per name
//!   however many flows wait) and, under `enforce`, keeps holding the flow's first bytes, within
//!   the inspection bounds; the runtime answers through [`Pipeline::dns_answer`], which decides
//!   the waiting flows. A flow whose inspection time runs out first fails closed
//!   (`sni_dns_timeout`), one whose lookup fails gets `sni_dns_failure`. Under `log` nothing
//!   waits: the flow goes on, and when the answer says the address is not the name's, one more
//!   decision record says so (disposition `Detected`); a failed lookup is only counted.
//!
//! Offline (`bulkhead replay`) nothing can be asked: a name the cache does not know (from DNS
//! answers in the capture, or an answer file) is `sni_dns_unverified`: refused under `enforce`,
//! noted on the record under `log`.
//!
//! QUIC flows and TLS hellos carried on a SYN (TCP Fast Open) are decided where the hello is
//! read, which cannot wait: they are checked against the cache, and on a miss under `enforce`
//! they are refused (`sni_dns_failure`, outcome `not_cached`) while the lookup warms the cache:
//! a QUIC client falls back to TCP, whose flows wait for the answer.
//!
//! The same module learns answers from DNS responses that cross the gateway
//! ([`crate::dns::observe`]).
//!
//! [`CompiledPolicy::name_check`]: policy_engine::CompiledPolicy::name_check
//! [`DnsCache`]: crate::dns::DnsCache

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use policy_engine::SniDnsCheck;
use smallvec::SmallVec;

use crate::dns::observe::DnsObserver;
use crate::dns::{CacheLookup, DnsAnswer, DnsCache, DnsFailure};
use crate::record::{DnsCheck, Reason};
use crate::wire::{IpProtocol, ParsedPacket, UdpDatagram};

use super::flow::FlowKey;
use super::name;
use super::state::{Flow, Phase};
use super::{Output, Pipeline, Shared};

/// DNS port.
const DNS_PORT: u16 = 53;

/// Most flows waiting for one name's lookup (a cold cache and a burst of connections to one
/// name); past it a flow that must wait fails closed under `enforce`, and under `log` gets no
/// later check.
const MAX_WAITERS_PER_NAME: usize = 4096;

/// Flows waiting for one name.
#[derive(Debug)]
pub(super) struct Waiting {
    /// When the lookup was asked for: a name asked longer ago than the inspection timeout is
    /// asked again (its answer was lost).
    asked: Instant,
    flows: SmallVec<[FlowKey; 2]>,
}

/// The pipeline's side of the DNS check.
#[derive(Debug)]
pub(super) struct DnsState {
    pub(super) cache: Arc<DnsCache>,
    pub(super) observer: DnsObserver,
    /// Names looked up now, with the flows waiting for them (held under `enforce`, forwarded
    /// under `log`). Bounded by [`DnsCheckConfig::max_waiting_names`](super::api::DnsCheckConfig).
    waiting: HashMap<Box<str>, Waiting>,
    max_waiting: usize,
    offline: bool,
    /// The answer being handed out by [`Pipeline::dns_answer`]: it decides before the cache.
    answer: Option<(Box<str>, DnsAnswer)>,
    /// Attached to the next decision record.
    pub(super) record: Option<DnsCheck>,
}

impl DnsState {
    pub(super) fn new(config: &super::api::DnsCheckConfig) -> DnsState {
        DnsState {
            cache: config
                .cache
                .clone()
                .unwrap_or_else(|| Arc::new(DnsCache::new(Default::default()))),
            observer: {
                let o = DnsObserver::new(config.learn_from.clone(), config.max_pending_queries);
                if config.learn_from_any {
                    o.trusting_any()
                } else {
                    o
                }
            },
            waiting: HashMap::new(),
            max_waiting: config.max_waiting_names,
            offline: config.offline,
            answer: None,
            record: None,
        }
    }
}

/// What the check says for one flow.
#[derive(Debug)]
pub(super) enum CheckOutcome {
    /// The address is the name's (or, under `log`, the answer will be checked when it comes).
    Confirmed,
    /// Under `enforce`: hold the flow until the lookup answers.
    Pending,
    /// Not confirmed: the reason, and the record's `dns_check`.
    Failed(Reason, DnsCheck),
    /// Confirmed for the verdict, with a note for the record (offline under `log`).
    Noted(DnsCheck),
}

/// The key of a flow in the table.
pub(super) fn flow_key(flow: &Flow) -> FlowKey {
    FlowKey::new(
        flow.proto.number(),
        flow.client.ip(),
        flow.client.port(),
        flow.server.ip(),
        flow.server.port(),
    )
    .0
}

/// What a lookup said about `addr`.
enum Found {
    Match,
    Mismatch(Vec<IpAddr>),
    Failed(DnsFailure),
    Miss,
}

fn reason_of(f: DnsFailure) -> Reason {
    match f {
        DnsFailure::Timeout => Reason::SniDnsTimeout,
        DnsFailure::Error | DnsFailure::Refused => Reason::SniDnsFailure,
        DnsFailure::Unverified => Reason::SniDnsUnverified,
    }
}

fn note(
    name: &str,
    addr: IpAddr,
    resolved: Vec<IpAddr>,
    outcome: &str,
    mode: SniDnsCheck,
) -> DnsCheck {
    DnsCheck {
        name: name.to_owned(),
        address: addr,
        resolved,
        outcome: outcome.to_owned(),
        mode: mode.as_str().to_owned(),
    }
}

impl Shared {
    fn dns_find(&self, now: Instant, name: &str, addr: IpAddr) -> Found {
        if let Some((n, a)) = &self.dns.answer {
            if **n == *name {
                return match a {
                    DnsAnswer::Addresses(list) if list.contains(&addr) => Found::Match,
                    DnsAnswer::Addresses(list) => Found::Mismatch(list.clone()),
                    DnsAnswer::Failed(f) => Found::Failed(*f),
                };
            }
        }
        match self.dns.cache.lookup(name, addr, now) {
            CacheLookup::Match => Found::Match,
            CacheLookup::Mismatch(r) => Found::Mismatch(r),
            CacheLookup::Miss => Found::Miss,
        }
    }

    /// Registers `key` as waiting for `name` and asks for a lookup unless one is under way.
    /// False when too many names wait already.
    fn dns_wait(&mut self, now: Instant, name: &str, key: FlowKey, out: &mut Output) -> bool {
        let stale_after = self.config.inspect_timeout;
        if let Some(w) = self.dns.waiting.get_mut(name) {
            if w.flows.len() >= MAX_WAITERS_PER_NAME {
                self.stats.dns_queries_refused += 1;
                return false;
            }
            // Not de-duplicated (that would cost a scan per flow): a flow listed twice is
            // decided once, the second visit finds it decided.
            w.flows.push(key);
            if now.saturating_duration_since(w.asked) > stale_after {
                w.asked = now;
                out.dns_queries.push(name.into());
                self.stats.dns_queries += 1;
            }
            return true;
        }
        if self.dns.waiting.len() >= self.dns.max_waiting {
            // Lookups whose answer never came: their flows have timed out by now.
            self.dns
                .waiting
                .retain(|_, w| now.saturating_duration_since(w.asked) <= stale_after);
            if self.dns.waiting.len() >= self.dns.max_waiting {
                self.stats.dns_queries_refused += 1;
                return false;
            }
        }
        let mut flows = SmallVec::new();
        flows.push(key);
        self.dns
            .waiting
            .insert(name.into(), Waiting { asked: now, flows });
        out.dns_queries.push(name.into());
        self.stats.dns_queries += 1;
        true
    }

    /// The check of `name` for `flow` under `mode` (not `Off`). `can_wait`: the caller can hold
    /// the flow until the lookup answers.
    pub(super) fn dns_check(
        &mut self,
        now: Instant,
        flow: &Flow,
        name: &str,
        mode: SniDnsCheck,
        can_wait: bool,
        out: &mut Output,
    ) -> CheckOutcome {
        let addr = flow.server.ip();
        // An answer handed in by `dns_answer` decides the flows that waited for it: not a hit.
        let answered = self.dns.answer.as_ref().is_some_and(|(n, _)| **n == *name);
        let hit = u64::from(!answered);
        match self.dns_find(now, name, addr) {
            Found::Match => {
                self.stats.dns_cache_hits += hit;
                CheckOutcome::Confirmed
            }
            Found::Mismatch(resolved) => {
                self.stats.dns_cache_hits += hit;
                self.stats.dns_mismatches += 1;
                CheckOutcome::Failed(
                    Reason::SniAddressMismatch,
                    note(name, addr, resolved, "mismatch", mode),
                )
            }
            Found::Failed(f) => {
                self.stats.dns_failures += 1;
                CheckOutcome::Failed(reason_of(f), note(name, addr, Vec::new(), f.as_str(), mode))
            }
            Found::Miss => {
                self.stats.dns_cache_misses += 1;
                if self.dns.offline {
                    self.stats.dns_failures += 1;
                    let n = note(
                        name,
                        addr,
                        Vec::new(),
                        DnsFailure::Unverified.as_str(),
                        mode,
                    );
                    return match mode {
                        SniDnsCheck::Enforce => CheckOutcome::Failed(Reason::SniDnsUnverified, n),
                        _ => CheckOutcome::Noted(n),
                    };
                }
                let waiting = self.dns_wait(now, name, flow_key(flow), out);
                match mode {
                    SniDnsCheck::Enforce if can_wait && waiting => CheckOutcome::Pending,
                    SniDnsCheck::Enforce => {
                        self.stats.dns_failures += 1;
                        let outcome = if waiting { "not_cached" } else { "refused" };
                        CheckOutcome::Failed(
                            Reason::SniDnsFailure,
                            note(name, addr, Vec::new(), outcome, mode),
                        )
                    }
                    _ => CheckOutcome::Confirmed,
                }
            }
        }
    }

    /// A forwarded UDP datagram to or from port 53: learn what it teaches.
    pub(super) fn dns_observe(&mut self, now: Instant, p: &ParsedPacket<'_>, u: &UdpDatagram<'_>) {
        let src = SocketAddr::new(p.src, u.src_port);
        let dst = SocketAddr::new(p.dst, u.dst_port);
        if u.dst_port == DNS_PORT {
            self.dns.observer.query(now, src, dst, u.payload);
        }
        if u.src_port == DNS_PORT {
            if let Some(l) = self.dns.observer.response(now, src, dst, u.payload) {
                self.dns.cache.insert(&l.name, &l.addrs, now);
                self.stats.dns_learned += 1;
            }
        }
    }

    /// The inspection time of a flow waiting for its lookup ran out: fail closed.
    pub(super) fn dns_timed_out(&mut self, now: Instant, flow: &mut Flow, out: &mut Output) {
        let found = flow
            .inspect
            .as_ref()
            .map(|i| name::classify(i.buf.contiguous()));
        if let Some((Some((n, kind)), _)) = found.as_ref().map(super::decide::found_name) {
            let policy = self.policy.load_full();
            let mode = policy.sni_dns_check();
            self.dns.record = Some(note(&n, flow.server.ip(), Vec::new(), "timeout", mode));
            flow.decision = Some(super::state::Decision {
                verdict: None,
                enforced: policy_engine::Action::Reject,
                reason: Reason::SniDnsTimeout,
                version: policy.version(),
                instance: policy.instance(),
                name: Some((n.into_boxed_str(), kind)),
            });
        }
        self.stats.dns_failures += 1;
        self.fail_closed(now, flow, Reason::SniDnsTimeout, out);
        self.dns.record = None;
    }
}

impl Pipeline {
    /// The shared cache the DNS check reads.
    pub fn dns_cache(&self) -> &Arc<DnsCache> {
        &self.shared.dns.cache
    }

    /// Counters of the DNS observer (answers learned from traffic crossing the gateway).
    pub fn dns_observer_stats(&self) -> crate::dns::observe::ObserveStats {
        self.shared.dns.observer.stats()
    }

    /// Names waiting for a lookup now.
    pub fn dns_waiting(&self) -> usize {
        self.shared.dns.waiting.len()
    }

    /// The answer to a lookup asked for in [`Output::dns_queries`]: decides the flows that
    /// wait for `name` (held under `enforce`; forwarded under `log`, which get one more record
    /// when the answer does not confirm their address). The caller stores successful answers
    /// in the shared cache itself (the runtime's resolver does); this call does not.
    pub fn dns_answer(&mut self, now: Instant, name: &str, answer: DnsAnswer, out: &mut Output) {
        let Some(waiting) = self.shared.dns.waiting.remove(name) else {
            return;
        };
        self.shared.dns.answer = Some((name.into(), answer));
        let policy = self.shared.policy.load_full();
        for key in waiting.flows {
            let Some(id) = self.flows.lookup(&key) else {
                continue;
            };
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            match flow.phase {
                Phase::Inspecting => {
                    let Some(insp) = flow.inspect.as_mut() else {
                        continue;
                    };
                    if !insp.dns_wait {
                        continue;
                    }
                    insp.dns_wait = false;
                    let found = name::classify(insp.buf.contiguous());
                    self.shared.decide_held(now, flow, &found, &policy, out);
                }
                Phase::Forwarding if flow.name() == Some(name) => {
                    self.shared.dns_late_check(now, flow, name, &policy, out);
                }
                _ => continue,
            }
            self.shared.end_if_closed(now, flow, out);
            self.shared.arm(id, flow);
        }
        self.shared.dns.answer = None;
    }
}

impl Shared {
    /// Under `log`, the answer for a flow that went on without waiting: one more record when it
    /// does not confirm the address.
    fn dns_late_check(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        name: &str,
        policy: &policy_engine::CompiledPolicy,
        out: &mut Output,
    ) {
        let Some(d) = flow.decision.as_ref() else {
            return;
        };
        if d.instance != policy.instance() || d.reason.is_dns_check() {
            return;
        }
        let Some(v) = d.verdict else {
            return;
        };
        let q = super::state::flow_query(flow, Some(name));
        let mode = policy.name_check(&q, &v);
        if mode != SniDnsCheck::Log {
            return;
        }
        let outcome = self.dns_check(now, flow, name, mode, false, out);
        // Only a mismatch is evidence against the name: a failed lookup under `log` is counted
        // (`failure` in the metrics), not recorded, so that an unreachable resolver does not
        // turn every permitted flow into a detection.
        if let CheckOutcome::Failed(reason @ Reason::SniAddressMismatch, record) = outcome {
            if let Some(d) = flow.decision.as_mut() {
                d.reason = reason;
            }
            self.dns.record = Some(record);
            self.emit_decision(now, flow, policy, out);
        }
    }
}

/// True for a UDP flow to or from the DNS port (cheap test on the datagram path).
pub(super) fn is_dns(proto: IpProtocol, sport: u16, dport: u16) -> bool {
    proto == IpProtocol::Udp && (sport == DNS_PORT || dport == DNS_PORT)
}
