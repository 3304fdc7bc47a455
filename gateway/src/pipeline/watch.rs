//! The watch of a permitted TCP flow after its verdict.
//!
//! A permitted flow keeps the reassembled bytes while they can still matter (bounded by the
//! per-flow limit): retransmissions that overlap them must carry the same bytes, or the flow is
//! cut (`ambiguous_overlap`), because the server may take the retransmission for the bytes the
//! gateway inspected. The bytes are freed once the server has acknowledged past them.
//!
//! - **TLS**: the client's handshake records that follow the first ClientHello are watched until
//!   the first ChangeCipherSpec or application-data record. A second ClientHello (after a
//!   HelloRetryRequest, or a duplicate) is parsed; its name is recorded, and when the policy
//!   denies that name the flow is cut (`second_hello`). The TLS watch uses the first window
//!   only: the plaintext handshake ends within it.
//! - **Plain HTTP**: every later request head is parsed the same way (keep-alive, pipelining; a
//!   body is skipped by its `Content-Length`, or followed chunk by chunk when it is `chunked`,
//!   without reading the chunk data: [`crate::inspect::http::framing`]). A Host other than the
//!   one the flow was decided on is re-evaluated and recorded, and when the policy does not
//!   permit it the flow is cut (`host_changed`). An ambiguous head fails closed (`parse_error`),
//!   and so does a body whose end is ambiguous, because the gateway and the server could then
//!   disagree on where the next request starts. Requests pipelined with the first are checked
//!   before the held segments are released.
//!
//! The watch of requests follows the connection with a window of the per-flow limit: what the
//! watch parsed (request heads, chunk-size lines) stays until the server has acknowledged it, so
//! that a retransmission of an inspected request must carry the same bytes; request body, which
//! the watch skips, is let go of as soon as what came before it is acknowledged, and from then on
//! segments that carry only body are not stored. Offsets are renumbered every GiB
//! ([`REBASE_FROM`]), so the watch lasts as long as the connection. It stops (and later requests
//! pass unchecked) when what it must keep outgrows the window (a single head larger than the
//! window, or heads and body arriving faster than the server acknowledges them), when the
//! held-bytes total is reached, and when the bytes stop being HTTP (a protocol upgrade).
//!
//! Flows whose verdict was final on the SYN are watched the same way without holding anything,
//! so that their records and policy re-evaluation know the name ([`Shared::first_name_observed`]).

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy};

use crate::record::Reason;
use crate::wire::TcpSegment;

use super::decide::{found_name, found_reason, rule_reason};
use crate::inspect::http::framing::{chunk_step, ChunkPart, ChunkStep};

use super::name::{self, Found, Watch};
use super::reasm::Insert;
use super::starttls::hello_start;
use super::state::{
    data_offset, flow_query, seq_gt, usable_name, Decision, Flow, Inspect, NameKind, Phase, Record,
    RstSeen, REBASE_FROM,
};
use super::{Disposition, DropReason, Output, Shared};
use crate::inspect::starttls::Protocol;

impl Shared {
    /// A client segment of a permitted flow that still has reassembled bytes: check it agrees
    /// with what was inspected, and look for a second ClientHello.
    pub(super) fn watch(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let total_ok =
            self.stats.held_bytes_now + seg.payload.len() <= self.config.max_held_bytes_total;
        let (base, server_ack) = (flow.tcp.base, flow.tcp.server_ack);
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Forward;
        };
        if let Some(watch) = insp.watch.filter(|w| w.follows_requests()) {
            // Keep-alive HTTP: let go of what the server acknowledged and the watch has passed,
            // so the window follows the connection from request to request. Bytes the server
            // has not acknowledged stay, to be compared with retransmissions, unless they are
            // request body the watch skips: once everything it parsed is acknowledged, the
            // window jumps to where it looks next.
            let origin = base.wrapping_add(insp.shift);
            let acked = server_ack.map_or(0, |a| (a.wrapping_sub(origin) as i32).max(0) as u32);
            let at = u32::try_from(watch.at()).unwrap_or(u32::MAX);
            let inspected_end = insp.inspected_end.max(insp.guard_end);
            let to = if acked >= inspected_end {
                at
            } else {
                acked.min(at)
            };
            let freed = insp.buf.advance(to);
            self.account(-(freed as isize));
            let by = insp.buf.origin();
            if by >= REBASE_FROM {
                insp.buf.rebase(by);
                insp.watch = Some(watch.moved_to(watch.at() - by as usize));
                insp.guard_end = insp.guard_end.saturating_sub(by);
                insp.inspected_end = insp.inspected_end.saturating_sub(by);
                insp.shift = insp.shift.wrapping_add(by);
            }
        }
        let offset = data_offset(base, insp.shift, seg);
        let before = insp.bytes();
        let start = offset.max(0) as u32;
        let res = if insp.watch.is_some() && total_ok {
            insp.buf.insert(offset, seg.payload)
        } else if offset + seg.payload.len() as i64 > 0
            && !insp
                .buf
                .agrees(start, &seg.payload[(start as i64 - offset) as usize..])
        {
            Insert::Conflict
        } else {
            Insert::Old
        };
        match res {
            Insert::Conflict => {
                let d = self.fail_closed(now, flow, Reason::AmbiguousOverlap, out);
                return if matches!(d, Disposition::Held) {
                    Disposition::Forward
                } else {
                    d
                };
            }
            Insert::Overflow => insp.watch = None,
            Insert::Stored { .. } | Insert::Old => {}
        }
        if !total_ok {
            insp.watch = None;
        }
        let after = insp.bytes();
        self.account(after as isize - before as isize);
        if insp.watch.is_some() {
            self.scan_watched(now, flow, policy, out);
        }
        if flow.phase != Phase::Forwarding {
            let reason = match flow.phase {
                Phase::Cut(reason) => reason,
                _ => Reason::SecondHello,
            };
            return Disposition::Drop(DropReason::FailClosed(reason));
        }
        self.finish_watch_if_done(now, flow, policy, out);
        Disposition::Forward
    }

    /// Looks at what the watch of a permitted flow has reassembled, for as long as it can go on:
    /// the first name of a flow decided on the SYN, later ClientHellos in the TLS records, later
    /// HTTP request heads and the chunked bodies between them.
    pub(super) fn scan_watched(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        while self.scan_step(now, flow, policy, out) == Scan::Again {}
    }

    /// One step of [`Shared::scan_watched`].
    fn scan_step(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Scan {
        let Some(insp) = flow.inspect.as_mut() else {
            return Scan::Stop;
        };
        let Some(watch) = insp.watch else {
            return Scan::Stop;
        };
        if flow.decision.as_ref().is_some_and(|d| d.name.is_none()) && watch.at() == 0 {
            // Decided on the SYN: the first hello is at offset 0.
            return self.scan_first_name(now, flow, policy, out);
        }
        match watch {
            Watch::Tls(at) => self.scan_tls_record(now, flow, at, policy, out),
            Watch::Http(at) => self.scan_request_head(now, flow, at, policy, out),
            Watch::Chunked(part, at) => self.scan_chunk(now, flow, part, at, out),
        }
    }

    /// The first name of a flow decided on the SYN.
    fn scan_first_name(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Scan {
        let Some(insp) = flow.inspect.as_mut() else {
            return Scan::Stop;
        };
        let bytes = insp.buf.contiguous();
        // A mail flow names itself after its STARTTLS dialogue, if at all.
        let (from, found) = match Protocol::for_port(flow.server.port()) {
            Some(proto) => match hello_start(proto, bytes) {
                Ok(at) => (at, name::classify(&bytes[at..])),
                Err(found) => (0, found),
            },
            None => (0, name::classify(bytes)),
        };
        if found == Found::Incomplete {
            return Scan::Stop;
        }
        insp.watch = name::watch_from(&found).map(|w| w.moved_to(w.at() + from));
        self.first_name_observed(now, flow, &found, policy, out);
        Scan::Again
    }

    /// The TLS record at `at`: a ClientHello is checked, a ChangeCipherSpec or another handshake
    /// record skipped; anything else ends the plaintext handshake and the watch.
    fn scan_tls_record(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        at: usize,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Scan {
        let Some(insp) = flow.inspect.as_mut() else {
            return Scan::Stop;
        };
        let rest = watched_from(insp, at);
        if rest.len() < 5 {
            return Scan::Stop;
        }
        let rlen = 5 + usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        match rest[0] {
            22 => match name::classify(rest) {
                Found::Incomplete => Scan::Stop,
                found @ Found::Tls { end, .. } => {
                    insp.watch = Some(Watch::Tls(at + end));
                    self.second_hello(now, flow, &found, policy, out);
                    Scan::again_if_forwarding(flow)
                }
                _ => {
                    // Another handshake message: skip its record.
                    if rest.len() < rlen {
                        return Scan::Stop;
                    }
                    insp.watch = Some(Watch::Tls(at + rlen));
                    Scan::Again
                }
            },
            // ChangeCipherSpec: TLS 1.3 clients in middlebox-compatibility mode send one before
            // the second ClientHello that answers a HelloRetryRequest.
            20 => {
                if rest.len() < rlen {
                    return Scan::Stop;
                }
                insp.watch = Some(Watch::Tls(at + rlen));
                Scan::Again
            }
            // Alert, application data, anything else: the plaintext handshake is over.
            _ => {
                insp.watch = None;
                Scan::Stop
            }
        }
    }

    /// The HTTP request head at `at` (keep-alive, pipelining).
    fn scan_request_head(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        at: usize,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Scan {
        let Some(insp) = flow.inspect.as_mut() else {
            return Scan::Stop;
        };
        let rest = watched_from(insp, at);
        if rest.is_empty() {
            return Scan::Stop;
        }
        match name::classify_request(rest) {
            Found::Incomplete => Scan::Stop,
            found @ Found::Http { end, .. } => {
                mark_inspected(insp, at, end);
                insp.watch =
                    name::watch_from(&found).map(|w| w.moved_to(at.saturating_add(w.at())));
                self.later_request(now, flow, &found, policy, out);
                Scan::again_if_forwarding(flow)
            }
            Found::Malformed => {
                // An ambiguous head (conflicting Host fields, a Host that contradicts the target,
                // line folding, a body of uncertain length) after the first: fail closed as on
                // the first request.
                insp.watch = None;
                self.fail_closed(now, flow, Reason::ParseError, out);
                Scan::Stop
            }
            _ => {
                // Not HTTP any more (a protocol upgrade): nothing more to watch.
                insp.watch = None;
                Scan::Stop
            }
        }
    }

    /// One part of a chunked request body at `at`, followed piece by piece to the next request.
    fn scan_chunk(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        part: ChunkPart,
        at: usize,
        out: &mut Output,
    ) -> Scan {
        let Some(insp) = flow.inspect.as_mut() else {
            return Scan::Stop;
        };
        let rest = watched_from(insp, at);
        if rest.is_empty() {
            return Scan::Stop;
        }
        match chunk_step(part, rest) {
            ChunkStep::Incomplete => Scan::Stop,
            ChunkStep::Next {
                read,
                advance,
                next,
            } => {
                mark_inspected(insp, at, read);
                insp.watch = Some(Watch::Chunked(next, at.saturating_add(advance)));
                Scan::Again
            }
            ChunkStep::End { read } => {
                mark_inspected(insp, at, read);
                insp.watch = Some(Watch::Http(at.saturating_add(read)));
                Scan::Again
            }
            ChunkStep::Malformed => {
                insp.watch = None;
                self.fail_closed(now, flow, Reason::ParseError, out);
                Scan::Stop
            }
        }
    }

    /// The name of a flow decided on the SYN was found by watching: complete its record, and
    /// check the name against the policy (the address-only verdict did not depend on it).
    pub(super) fn first_name_observed(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let (name, reason_if_none) = found_name(found);
        // The verdict for the name: the same as the SYN's when it was final under this policy;
        // under log-only it is the verdict the record reports, with the reason enforcement
        // would have given.
        let v = policy.evaluate(&flow_query(flow, usable_name(&name)));
        // The name decides the reason only while the record that reports it is owed: once a
        // record was written, the reason computed here is never reported (a cut replaces it).
        let name_decides = matches!(flow.record, Record::Owed { name_decides: true });
        let reason = if name_decides {
            found_reason(policy, &v, reason_if_none)
        } else {
            rule_reason(&v)
        };
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason,
            version: policy.version(),
            instance: policy.instance(),
            name: name.map(|(n, k)| (n.into_boxed_str(), k)),
        });
        if flow.record.owed() || self.must_log(&v) && !flow.record.decision_written() {
            self.emit_decision(now, flow, policy, out);
        }
        if v.effective_action != Action::Permit {
            // Only a policy swap between the SYN and the hello gets here.
            self.stats.policy_update_cuts += 1;
            if let Some(d) = flow.decision.as_mut() {
                d.reason = Reason::PolicyUpdate;
            }
            self.emit_decision(now, flow, policy, out);
            self.reset(flow, true, true, out);
            self.cut(flow, Reason::PolicyUpdate);
        }
    }

    /// A second ClientHello on a permitted flow: record it; cut the flow if the policy denies
    /// its name.
    pub(super) fn second_hello(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        self.stats.second_hellos += 1;
        let Found::Tls {
            name,
            ech,
            unusable,
            ..
        } = found
        else {
            return;
        };
        let (name, kind) = match (name, unusable) {
            (None, Some(u)) => (Some(u.clone()), NameKind::SniNotHostname { ech: *ech }),
            _ => (name.clone(), NameKind::Sni { ech: *ech }),
        };
        self.later_name(now, flow, name, kind, Reason::SecondHello, policy, out);
    }

    /// A later HTTP request on a permitted plain-HTTP flow (keep-alive, pipelining): a Host other
    /// than the one the flow was decided on is re-evaluated, and the flow is cut when the policy
    /// does not permit it.
    pub(super) fn later_request(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let Found::Http { host, .. } = found else {
            return;
        };
        self.stats.later_requests += 1;
        if host.as_deref() == flow.name() {
            return;
        }
        self.later_name(
            now,
            flow,
            host.clone(),
            NameKind::Host,
            Reason::HostChanged,
            policy,
            out,
        );
    }

    /// Another name on a permitted flow: record it; cut the flow (`reason`) if the policy denies
    /// it. The flow keeps its first name when both are permitted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn later_name(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        name: Option<String>,
        kind: NameKind,
        deny_reason: Reason,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let q = flow_query(flow, name.as_deref().filter(|_| kind.usable()));
        let v = policy.evaluate(&q);
        let first = flow
            .decision
            .as_ref()
            .and_then(|d| d.name.as_ref())
            .map(|(n, _)| n.clone());
        let denied = v.effective_action != Action::Permit;
        let reason = if denied { deny_reason } else { rule_reason(&v) };
        let decision = Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason,
            version: policy.version(),
            instance: policy.instance(),
            name: name.map(|n| (n.into_boxed_str(), kind)),
        };
        let previous = flow.decision.replace(decision);
        let log = self.must_log(&v) || flow.record.decision_written();
        if log {
            self.emit_decision(now, flow, policy, out);
        }
        if denied {
            self.stats.fail_closed += 1;
            self.reset(flow, true, true, out);
            self.cut(flow, deny_reason);
        } else if first.is_some() {
            // Keep the first name as the flow's name for re-evaluation; both were allowed.
            flow.decision = previous;
        }
    }

    /// Once the watch is over: writes the decision record still owed, and lets go of the
    /// reassembled bytes the server acknowledged.
    pub(super) fn finish_watch_if_done(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let Some(insp) = flow.inspect.as_ref() else {
            return;
        };
        if insp.watch.is_none() && flow.record.owed() {
            self.emit_decision(now, flow, policy, out);
        }
        self.maybe_release_guard(flow);
    }

    /// Frees the reassembled bytes once the server acknowledged past them and nothing is watched.
    pub(super) fn maybe_release_guard(&mut self, flow: &mut Flow) {
        let Some(insp) = flow.inspect.as_ref() else {
            return;
        };
        if insp.watch.is_some() {
            return;
        }
        let end = flow
            .tcp
            .base
            .wrapping_add(insp.shift)
            .wrapping_add(insp.buf.contiguous_end().max(insp.guard_end));
        let acked = flow.tcp.server_ack.is_some_and(|a| !seq_gt(end, a));
        if acked || flow.tcp.rst != RstSeen::None {
            self.drop_inspect(flow);
        }
    }
}

/// Whether [`Shared::scan_watched`] goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The watch moved on: look again.
    Again,
    /// More bytes are needed, or the watch (or the flow) is over.
    Stop,
}

impl Scan {
    /// Go on unless the step cut the flow.
    fn again_if_forwarding(flow: &Flow) -> Scan {
        if flow.phase == Phase::Forwarding {
            Scan::Again
        } else {
            Scan::Stop
        }
    }
}

/// The reassembled bytes from stream offset `at` on (empty when none are there yet). The
/// buffer's origin is never past what is watched.
fn watched_from(insp: &Inspect, at: usize) -> &[u8] {
    let bytes = insp.buf.contiguous();
    let rel = at.saturating_sub(insp.buf.origin() as usize);
    &bytes[rel.min(bytes.len())..]
}

/// The watch parsed `read` bytes from stream offset `at` (a request head, a chunk-size line):
/// they stay until the server acknowledged them, so a retransmission must repeat them.
fn mark_inspected(insp: &mut Inspect, at: usize, read: usize) {
    let read_end = u32::try_from(at.saturating_add(read)).unwrap_or(u32::MAX);
    insp.inspected_end = insp.inspected_end.max(read_end);
}
