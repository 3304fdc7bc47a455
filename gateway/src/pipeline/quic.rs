//! UDP 443 (QUIC): the name of a flow whose verdict needs one is read from the client's Initial
//! packets ([`crate::inspect::quic`]).
//!
//! The flow's client datagrams are held, as a TCP flow's segments are, until the ClientHello is
//! whole; the same bounds apply (held bytes per flow: `inspect_overflow`, over all flows:
//! `memory_pressure`, time from the first held datagram: `inspect_timeout`) and an Initial that
//! breaks the rules fails the flow closed (`parse_error`). A first datagram that is not a QUIC
//! long header, or a version whose Initials cannot be read, is decided without a name
//! (`no_sni`). On the verdict: a permit releases the held datagrams in arrival order, a deny
//! drops them, a reject answers with ICMP port unreachable, which makes a QUIC client fall back
//! to TCP at once.
//!
//! After a permit the reader stays with the flow. Short-header packets (the connection proper)
//! pass without being looked at; a later client Initial is read too, and one that carries
//! another ClientHello (the client starting over in another version after a Version
//! Negotiation, or a new connection reusing the ports) does not ride on the first verdict: the
//! flow is inspecting again, its datagrams held until the new hello is whole, and it is decided
//! on the new name.
//!
//! Log-only never holds: a flow whose verdict needs the name passes at once, and its Initials
//! are read as they pass, so that its decision record (owed until then) carries the name and the
//! verdict enforcement would have given for it.

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode};

use crate::inspect::quic::{InitialCollector, QuicParse};
use crate::record::Reason;
use crate::wire::{self, ParsedPacket, Unreachable};

use super::name::Found;
use super::state::{Flow, Held, Inspect, NameKind, Phase};
use super::{Disposition, DropReason, Output, PacketMeta, Shared, Transmit};

/// The QUIC long-header bit (RFC 8999 5.1): set on Initial, 0-RTT, Handshake and Retry packets,
/// clear on the packets of an established connection.
const LONG_HEADER: u8 = 0x80;

/// The port QUIC is inspected on.
pub(super) const QUIC_PORT: u16 = 443;

/// True when a UDP payload starts with a QUIC long header.
pub(super) fn is_long_header(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| b & LONG_HEADER != 0)
}

/// What a client datagram of an inspecting flow brought.
enum Outcome {
    /// Hold it, wait for more.
    Wait,
    /// The name (or its proven absence) is known.
    Decide(Found),
    /// Fail closed with this reason.
    Fail(Reason),
}

impl Shared {
    /// Starts inspecting a new UDP 443 flow: an empty reader and nothing held.
    pub(super) fn quic_start(&mut self, flow: &mut Flow) {
        let mut insp = Inspect::new(0);
        insp.quic = Some(Box::new(InitialCollector::new()));
        flow.inspect = Some(Box::new(insp));
        flow.phase = Phase::Inspecting;
    }

    /// Holds a client datagram of an inspecting UDP 443 flow and decides once the Initials name
    /// the flow (or prove it nameless).
    pub(super) fn quic_hold(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        payload: &[u8],
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        if let Some(refused) = self.quic_keep(now, flow, p, meta, out) {
            return refused;
        }
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Drop(DropReason::Malformed);
        };
        // The reader allocates on its first Initial: counted with the held bytes.
        let before = insp.bytes();
        let outcome = match insp.quic.as_mut() {
            Some(c) => read_initials(c, payload),
            None => Outcome::Fail(Reason::ParseError),
        };
        self.account(insp.bytes() as isize - before as isize);
        self.quic_outcome(now, flow, outcome, p.packet, out)
    }

    /// Keeps a copy of a client datagram until the verdict, within the bounds; `Some` when a
    /// bound failed the flow closed.
    fn quic_keep(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Option<Disposition> {
        let len = p.packet.len();
        if self.stats.held_bytes_now + len > self.config.max_held_bytes_total {
            return Some(self.fail_closed(now, flow, Reason::MemoryPressure, out));
        }
        let per_flow = self.config.max_held_bytes_per_flow;
        let Some(insp) = flow.inspect.as_mut() else {
            return Some(Disposition::Drop(DropReason::Malformed));
        };
        if insp.held_packet_bytes + len > per_flow {
            return Some(self.fail_closed(now, flow, Reason::InspectOverflow, out));
        }
        insp.held.push(Held {
            offset: insp.held.len() as i64,
            len,
            fin: false,
            packet: p.packet.to_vec(),
            meta,
        });
        insp.held_packet_bytes += len;
        insp.started.get_or_insert(now);
        self.account(len as isize);
        None
    }

    /// What an inspecting flow does with what its latest datagram brought.
    fn quic_outcome(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        outcome: Outcome,
        last: &[u8],
        out: &mut Output,
    ) -> Disposition {
        match outcome {
            Outcome::Wait => Disposition::Held,
            Outcome::Fail(reason) => self.fail_closed(now, flow, reason, out),
            Outcome::Decide(found) => {
                let policy = self.policy.load_full();
                match self.quic_decide(now, flow, &found, &policy, last, out) {
                    // Released with the others, in order, through `out`.
                    Action::Permit => Disposition::Held,
                    Action::Deny | Action::Reject => Disposition::Drop(DropReason::Policy),
                }
            }
        }
    }

    /// Applies the verdict on the name to the held datagrams; returns the enforced action.
    fn quic_decide(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        last: &[u8],
        out: &mut Output,
    ) -> Action {
        let Some(mut insp) = flow.inspect.take() else {
            return Action::Deny;
        };
        let held = std::mem::take(&mut insp.held);
        self.account(-(insp.held_packet_bytes as isize));
        insp.held_packet_bytes = 0;
        insp.started = None;
        let action = self.decide_found(now, flow, found, policy, out);
        match action {
            Action::Permit => {
                // `held` is in arrival order: each datagram was appended as it came.
                for h in held {
                    self.stats.released += 1;
                    out.transmit.push(Transmit {
                        packet: h.packet,
                        meta: h.meta,
                    });
                }
                if flow.phase == Phase::Forwarding {
                    let before = insp.bytes();
                    if let Some(c) = insp.quic.as_mut() {
                        c.settle();
                    }
                    self.account(insp.bytes() as isize - before as isize);
                    flow.inspect = Some(insp);
                } else {
                    self.account(-(insp.bytes() as isize));
                }
            }
            Action::Deny => self.account(-(insp.bytes() as isize)),
            Action::Reject => {
                self.account(-(insp.bytes() as isize));
                self.icmp_refuse(last, Unreachable::Port, out);
            }
        }
        action
    }

    /// A client long-header datagram on a permitted UDP 443 flow. One that belongs to the
    /// ClientHello the flow was decided on passes. Another ClientHello (a new connection on the
    /// same ports, or the client starting over in another version after a Version Negotiation)
    /// puts the flow back to inspecting: its datagrams are held until the new hello is whole, and
    /// the flow is decided again on the new name, as a new flow would be. Nothing of the new
    /// hello reaches the server before its name is known.
    pub(super) fn quic_recheck(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        payload: &[u8],
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        if flow.record.owed() {
            // Log-only: the name is still to be read for the record.
            return self.quic_observe(now, flow, payload, out);
        }
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Forward;
        };
        let before = insp.bytes();
        let Some(c) = insp.quic.as_mut() else {
            return Disposition::Forward;
        };
        let outcome = read_initials(c, payload);
        // The settled reader takes a scratch buffer again to decrypt, and a new attempt the
        // whole CRYPTO buffer.
        self.account(insp.bytes() as isize - before as isize);
        let decided = flow
            .decision
            .as_ref()
            .and_then(|d| d.name.as_ref())
            .map(|(n, _)| &**n);
        match outcome {
            Outcome::Decide(Found::Tls { name, .. }) if name.as_deref() == decided => {
                Disposition::Forward
            }
            // Log-only never holds: another hello is read as it passes, and recorded.
            outcome if self.policy.load().mode() == Mode::LogOnly => {
                match outcome {
                    Outcome::Decide(Found::Tls { name, ech, .. }) => {
                        let policy = self.policy.load_full();
                        self.stats.second_hellos += 1;
                        let kind = NameKind::Sni { ech };
                        self.later_name(now, flow, name, kind, Reason::SecondHello, &policy, out);
                        self.quic_settle(flow);
                    }
                    Outcome::Fail(reason) => {
                        self.fail_closed(now, flow, reason, out);
                    }
                    Outcome::Decide(_) | Outcome::Wait => {}
                }
                Disposition::Forward
            }
            // Another hello: the flow is inspecting again, and this datagram is held until the
            // new hello is whole and decided, as the first one was.
            outcome => {
                flow.phase = Phase::Inspecting;
                if let Some(refused) = self.quic_keep(now, flow, p, meta, out) {
                    return refused;
                }
                self.quic_outcome(now, flow, outcome, p.packet, out)
            }
        }
    }

    /// Log-only: a UDP 443 flow whose verdict needs the name passes at once, and its client
    /// Initials are read as they pass, so that its decision record carries the name and the
    /// verdict enforcement would have given for it (`Detected` when that is not a permit).
    pub(super) fn quic_observe(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        payload: &[u8],
        out: &mut Output,
    ) -> Disposition {
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Forward;
        };
        let before = insp.bytes();
        let outcome = match insp.quic.as_mut() {
            Some(c) => read_initials(c, payload),
            None => Outcome::Fail(Reason::ParseError),
        };
        self.account(insp.bytes() as isize - before as isize);
        let found = match outcome {
            Outcome::Wait if self.stats.held_bytes_now <= self.config.max_held_bytes_total => {
                return Disposition::Forward;
            }
            Outcome::Wait => {
                self.fail_closed(now, flow, Reason::MemoryPressure, out);
                return Disposition::Forward;
            }
            Outcome::Fail(reason) => {
                // Log-only: recorded with the reason, and the flow goes on.
                self.fail_closed(now, flow, reason, out);
                return Disposition::Forward;
            }
            Outcome::Decide(found) => found,
        };
        let policy = self.policy.load_full();
        self.first_name_observed(now, flow, &found, &policy, out);
        self.quic_settle(flow);
        Disposition::Forward
    }

    /// Shrinks a permitted flow's reader to the hello it was decided on.
    fn quic_settle(&mut self, flow: &mut Flow) {
        if let Some(insp) = flow.inspect.as_mut() {
            let before = insp.bytes();
            if let Some(c) = insp.quic.as_mut() {
                c.settle();
            }
            self.account(insp.bytes() as isize - before as isize);
        }
    }

    /// Answers a refused packet with an ICMP destination-unreachable error of `kind`.
    pub(super) fn icmp_refuse(&mut self, offending: &[u8], kind: Unreachable, out: &mut Output) {
        let mut packet = Vec::new();
        if wire::build_icmp_error(&mut packet, offending, None, kind).is_ok() {
            self.stats.generated += 1;
            out.transmit.push(Transmit {
                packet,
                meta: PacketMeta::default(),
            });
        }
    }
}

/// Feeds one datagram to the reader: what the flow learned.
fn read_initials(c: &mut InitialCollector, payload: &[u8]) -> Outcome {
    match c.push(payload) {
        QuicParse::Incomplete => Outcome::Wait,
        QuicParse::Malformed(_) => Outcome::Fail(Reason::ParseError),
        // Not QUIC, or QUIC that cannot be read: decided without a name, as a TLS flow whose
        // ClientHello has no server name.
        QuicParse::NotQuic | QuicParse::UnsupportedVersion(_) => Outcome::Decide(Found::Tls {
            name: None,
            ech: false,
            end: 0,
            unusable: None,
        }),
        QuicParse::Complete(info) => {
            let name = match info.sni {
                Some(n) => match policy_engine::normalize_name(n.as_str()) {
                    Ok(n) => Some(n.into_owned()),
                    // A name the policy cannot read is a broken ClientHello, as over TCP.
                    Err(_) => return Outcome::Fail(Reason::ParseError),
                },
                None => None,
            };
            Outcome::Decide(Found::Tls {
                name,
                ech: info.ech,
                end: 0,
                unusable: None,
            })
        }
    }
}
