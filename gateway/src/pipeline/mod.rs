//! The sans-IO inspection pipeline: `process(now, packet) -> what to do`, plus packets to send.
//!
//! [`Pipeline::process`] takes one raw IP packet (IPv4 or IPv6, no link header) and the current
//! time, and returns a [`Disposition`] for that packet; packets the pipeline releases or builds
//! (held segments in order, TCP resets, ICMP errors) and decision-log records are appended to an
//! [`Output`]. Nothing here reads a clock, a socket or a file: the TUN runtime, `bulkhead replay`,
//! the tests (with a fake clock) and the benches all drive the same code. Time moves through
//! [`Pipeline::next_timeout`] / [`Pipeline::handle_timeout`]; a policy change reaches open flows
//! through [`Pipeline::reevaluate`]. `docs/pipeline.md` tells the whole behaviour in one place.
//!
//! # Map
//!
//! A packet goes through this module (parse, dispatch, counters), then one of the handlers; the
//! handlers work on one `state::Flow` taken from the flow table and on `shared::Shared`
//! (settings, policy, deadline queue, counters, clock), which are kept apart so that both can be
//! borrowed at once.
//!
//! | File | Job |
//! |---|---|
//! | `api.rs` | The public types: [`PipelineConfig`], [`PacketMeta`], [`Disposition`], [`Output`], [`PipelineStats`]... |
//! | `state.rs` | Per-flow state: the flow's phase and record state (one enum each), TCP tracking, what is held |
//! | `shared.rs` | What every flow shares, and the bookkeeping of held bytes and decisions |
//! | `housekeeping.rs` | Deadlines, expiry, reclaim and early drop in a full table, `flow_limit` |
//! | `datagram.rs` | UDP and other protocols, ICMP errors |
//! | `quic.rs` | UDP 443: datagrams held until the QUIC Initials name the flow |
//! | `tcp/` | TCP: a SYN (`syn.rs`), a flow seen mid-stream (`midstream.rs`), later segments (`established.rs`), resets (`reset.rs`) |
//! | `decide.rs` | Holding client bytes until the name is known, the verdict, failing closed |
//! | `watch.rs` | After the verdict: second ClientHellos, later HTTP requests, retransmissions |
//! | `records.rs` | Decision and flow-end records |
//! | `name.rs` | What the first client bytes say about the name (over [`crate::inspect`]) |
//! | `starttls.rs` | Mail flows (SMTP, IMAP, POP3): the plaintext dialogue followed to the ClientHello |
//! | [`flow`], [`reasm`], [`timer`] | The flow table, the reassembly buffer, the deadline queue |

mod api;
mod datagram;
mod decide;
mod dnscheck;
mod fastpath;
pub mod flow;
mod housekeeping;
mod name;
mod quic;
pub mod reasm;
mod records;
mod shared;
mod starttls;
mod state;
mod tcp;
pub mod timer;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use policy_engine::{Action, PolicyStore, Query, SynDecision};

use crate::record::{EndReason, Metadata, Reason};
use crate::wire::{self, L4};

pub use api::{
    Disposition, DnsCheckConfig, DropReason, IdleTimeouts, Output, PacketMeta, PipelineConfig,
    PipelineStats, Transmit,
};
pub use fastpath::{FastPathEvent, FastPathRequest, FlowTuple};
pub use housekeeping::EARLY_DROP_MIN_AGE;

use datagram::icmp_is_error;
use flow::FlowTable;
use records::ClockAnchor;
use shared::Shared;
use state::{flow_query, Decision, Flow, Phase};
use timer::DeadlineQueue;

/// The inspection pipeline of one worker. See the module docs.
#[derive(Debug)]
pub struct Pipeline {
    flows: FlowTable<Flow>,
    shared: Shared,
    /// Next slot [`Pipeline::early_drop`] probes.
    early_drop_cursor: usize,
}

impl Pipeline {
    /// A pipeline deciding with the policies `policy` holds.
    pub fn new(config: PipelineConfig, policy: Arc<PolicyStore>) -> Pipeline {
        let evaluated_instance = policy.load().instance();
        let dns = dnscheck::DnsState::new(&config.dns);
        Pipeline {
            early_drop_cursor: 0,
            flows: FlowTable::new(config.flow_capacity),
            shared: Shared {
                config,
                policy,
                timers: DeadlineQueue::new(),
                stats: PipelineStats::default(),
                clock: ClockAnchor {
                    instant: None,
                    epoch_ms: 0,
                },
                evaluated_instance,
                metadata: Metadata::default(),
                dns,
                next_cookie: 0,
            },
        }
    }

    /// Maps the caller's clock to wall-clock time: `instant` is `epoch_ms` milliseconds after the
    /// Unix epoch. Records use it for `time`, `start_time`, `end_time`. Until it is set, times
    /// are counted from the epoch itself (0).
    pub fn set_clock_anchor(&mut self, instant: Instant, epoch_ms: u64) {
        self.shared.clock = ClockAnchor {
            instant: Some(instant),
            epoch_ms,
        };
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.shared.config
    }

    /// Counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.shared.stats
    }

    /// Flows in the table.
    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// The earliest time [`Pipeline::handle_timeout`] has work to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.shared.timers.peek()
    }

    /// One IP packet (IPv4 or IPv6, no link header). What to do with this packet is the return
    /// value; packets to send are appended to `out.transmit`, records to `out.records`.
    pub fn process(
        &mut self,
        now: Instant,
        packet: &[u8],
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        self.shared.stats.packets += 1;
        let d = self.process_inner(now, packet, meta, out);
        #[cfg(debug_assertions)]
        self.debug_check_held_accounting();
        match d {
            Disposition::Forward => self.shared.stats.forwarded += 1,
            Disposition::Held => self.shared.stats.held += 1,
            Disposition::Drop(r) => self.shared.stats.dropped[r.index()] += 1,
        }
        d
    }

    /// Debug builds (tests, fuzzing) check that the held-bytes counter equals what the flows
    /// really hold: the counter is kept by deltas, and a missed delta would slowly turn into a
    /// false `memory_pressure` (or an unbounded real one). The check walks every flow, so it runs
    /// after every packet while the table is small (unit tests, fuzzing) and after one packet in
    /// 1024 past that, so that a debug build of the daemon stays usable under a flood.
    #[cfg(debug_assertions)]
    fn debug_check_held_accounting(&self) {
        const ALWAYS_BELOW: usize = 256;
        if self.flows.len() >= ALWAYS_BELOW && self.shared.stats.packets % 1024 != 0 {
            return;
        }
        let real: usize = self
            .flows
            .ids()
            .into_iter()
            .filter_map(|id| self.flows.get(id))
            .filter_map(|flow| flow.inspect.as_ref())
            .map(|i| i.bytes())
            .sum();
        debug_assert_eq!(
            self.shared.stats.held_bytes_now, real,
            "held-bytes counter out of step with the flows"
        );
    }

    /// Parses the packet and hands it to the handler of its protocol.
    fn process_inner(
        &mut self,
        now: Instant,
        packet: &[u8],
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        // Borrowed where it was built: moving the parsed packet out of the `Result` copies it.
        let parsed = wire::parse(packet);
        let Ok(p) = &parsed else {
            return Disposition::Drop(DropReason::Malformed);
        };
        match &p.l4 {
            L4::Fragment(_) => Disposition::Drop(DropReason::Fragment),
            // A TCP segment split by IP fragmentation would let the server reassemble bytes the
            // gateway never inspected: TCP uses path MTU discovery and never needs it.
            L4::Tcp(_) if p.fragment.is_some() => Disposition::Drop(DropReason::Fragment),
            L4::Tcp(seg) => self.tcp(now, p, seg, meta, out),
            L4::Udp(u) => self.udp(now, p, u, meta, out),
            L4::Icmp(m) if icmp_is_error(false, m.msg_type) => self.icmp_error(now, p, m.payload),
            L4::Icmpv6(m) if icmp_is_error(true, m.msg_type) => self.icmp_error(now, p, m.payload),
            L4::Icmp(_) | L4::Icmpv6(_) | L4::Other(_) => self.datagram(now, p, 0, 0, out),
        }
    }

    /// Expires flows whose deadline passed: inspection timeouts fail closed, idle flows are
    /// removed (with their flow-end record).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        while let Some((at, id)) = self.shared.timers.pop_due(now) {
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.timer_at != Some(at) {
                continue; // stale entry
            }
            flow.timer_at = None;
            if flow.phase == Phase::Inspecting {
                if let Some(dl) = self.shared.inspect_deadline(flow) {
                    if dl <= now {
                        if flow.inspect.as_ref().is_some_and(|i| i.dns_wait) {
                            self.shared.dns_timed_out(now, flow, out);
                        } else {
                            self.shared
                                .fail_closed(now, flow, Reason::InspectTimeout, out);
                        }
                        self.shared.end_if_closed(now, flow, out);
                        self.shared.arm(id, flow);
                        continue;
                    }
                }
            }
            if self.shared.deadline(flow) <= now {
                self.expire(now, id, EndReason::IdleTimeout, out);
            } else {
                self.shared.arm(id, flow);
            }
        }
    }

    /// Re-evaluates every decided flow after the policy changed; cuts the ones now denied (RST
    /// both ways, reason `policy_update`). A no-op when the policy did not change (the same
    /// table; a new table with the same version number is a change).
    pub fn reevaluate(&mut self, now: Instant, out: &mut Output) {
        let policy = self.shared.policy.load_full();
        if policy.instance() == self.shared.evaluated_instance {
            return;
        }
        self.shared.evaluated_instance = policy.instance();
        for id in self.flows.ids() {
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.phase != Phase::Forwarding {
                continue;
            }
            let Some(decision) = &flow.decision else {
                continue;
            };
            let name = flow.name();
            let q = flow_query(flow, name);
            let v = if name.is_none() && flow.inspect.as_ref().is_some_and(|i| i.watch.is_some()) {
                // Decided on the SYN and the name is not known yet: it will be checked when
                // found; meanwhile the address-only question decides.
                match policy.evaluate_without_name(&q) {
                    SynDecision::Final(v) => v,
                    SynDecision::NeedsName => continue,
                }
            } else if name.is_none() {
                match policy.evaluate_without_name(&q) {
                    SynDecision::Final(v) => v,
                    // The name was never seen and cannot be any more: fail closed.
                    SynDecision::NeedsName => policy.evaluate(&Query { name: None, ..q }),
                }
            } else {
                policy.evaluate(&q)
            };
            let reason = if v.effective_action == Action::Permit {
                continue;
            } else {
                Reason::PolicyUpdate
            };
            self.shared.stats.policy_update_cuts += 1;
            let kind = decision.name.as_ref().map(|(n, k)| (n.clone(), *k));
            flow.decision = Some(Decision {
                verdict: Some(v),
                enforced: v.effective_action,
                reason,
                version: policy.version(),
                instance: policy.instance(),
                name: kind,
            });
            self.shared.emit_decision(now, flow, &policy, out);
            if self.shared.take_back(flow, out) {
                // The kernel forwarded it: the sequence numbers the gateway knows are stale. Its
                // next packet comes back to the TUN and is answered with RSTs both ways; the
                // flow-end record waits for the kernel's counts (or the flow's expiry).
                self.shared.cut(flow, reason);
                self.shared.arm(id, flow);
                continue;
            }
            self.shared.reset(flow, true, true, out);
            self.shared.cut(flow, reason);
            self.shared.end_if_closed(now, flow, out);
            self.shared.arm(id, flow);
        }
    }

    /// Ends every flow: discards held data and writes the flow-end records (end reason
    /// `shutdown`). `replay` calls it at the end of the captures.
    pub fn shutdown(&mut self, now: Instant, out: &mut Output) {
        for id in self.flows.ids() {
            self.expire(now, id, EndReason::Shutdown, out);
        }
    }
}
