//! Mail flows that upgrade to TLS: the plaintext dialogue is followed to the ClientHello.
//!
//! A TCP flow to port 25, 587 (SMTP), 143 (IMAP) or 110 (POP3) whose verdict needs the name
//! starts in plaintext: the server greets, the client negotiates, asks for TLS (`STARTTLS`,
//! `STLS`), and sends its ClientHello after the server's go-ahead. Holding everything until the
//! hello would deadlock the dialogue, so while the flow is inspecting, the client's command lines
//! are read one at a time ([`crate::inspect::starttls`]):
//!
//! - a negotiation command (`EHLO domain`, `CAPABILITY`, `CAPA`, `NOOP`...) or the upgrade
//!   command itself is let through as soon as its line is complete: its held segments are
//!   released in order, and the server's answers pass as on any inspecting flow;
//! - from the first TLS handshake record on, the bytes are held and read as the ClientHello of
//!   any flow (reassembly, bounds, evasion checks), and the flow is decided on its name;
//! - any other line (`MAIL`, `AUTH`, `USER`, `LOGIN`, a line too long or not CRLF-terminated,
//!   binary) is held, and the flow is decided without a name (`not_tls`): a flow that never
//!   upgrades never gets anything past the negotiation to the server unless the policy permits
//!   it without a name.
//!
//! Bounds: at most [`MAX_COMMANDS`] lines and [`MAX_DIALOGUE_BYTES`] bytes are let through
//! before the hello (past them the flow is decided without a name); the inspection time bound
//! starts again with each line let through, so the whole dialogue takes at most
//! `(MAX_COMMANDS + 1) * inspect_timeout`; the held-bytes bounds apply as to any flow. A
//! retransmission of a line already let through passes when it repeats its bytes (anything else
//! is `ambiguous_overlap`).

use std::time::Instant;

use crate::inspect::starttls::{next_command, Protocol, Step};
use crate::inspect::tls::MAX_HELLO_LEN;

use super::name::{self, Found};
use super::state::{seq_gt, Flow};
use super::{Output, Shared, Transmit};

/// Most command lines let through before the ClientHello. A client needs two or three
/// (`EHLO`, `STARTTLS`; `CAPABILITY`, `STARTTLS`).
pub(super) const MAX_COMMANDS: u8 = 8;

/// Most plaintext bytes let through before the ClientHello.
pub(super) const MAX_DIALOGUE_BYTES: u32 = 1024;

const _: () = assert!((MAX_DIALOGUE_BYTES as usize) + MAX_HELLO_LEN <= 32 * 1024);

impl Shared {
    /// Reads what the client of a STARTTLS flow has sent since the last line let through: lets
    /// complete negotiation lines through, and answers what the bytes from there say about the
    /// name (the ClientHello, or its absence).
    pub(super) fn follow_starttls(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        out: &mut Output,
    ) -> Found {
        loop {
            let Some(insp) = flow.inspect.as_mut() else {
                return Found::Incomplete;
            };
            let Some(mut st) = insp.starttls else {
                return name::classify(insp.buf.contiguous());
            };
            let bytes = insp.buf.contiguous();
            let rest = &bytes[(st.passed as usize).min(bytes.len())..];
            if rest.first() == Some(&22) {
                // A TLS handshake record: the ClientHello (after the upgrade, or at once).
                return name::classify(rest);
            }
            let len = match next_command(st.proto, rest) {
                Step::Incomplete => return Found::Incomplete,
                Step::Other => return Found::NotTls,
                Step::Command { len } | Step::Upgrade { len } => len,
            };
            let passed = st.passed.saturating_add(len as u32);
            if st.commands >= MAX_COMMANDS || passed > MAX_DIALOGUE_BYTES {
                return Found::NotTls;
            }
            st.passed = passed;
            st.commands += 1;
            insp.starttls = Some(st);
            // The server's answer is awaited afresh.
            insp.started = Some(now);
            self.release_passed(flow, passed, out);
        }
    }

    /// Releases, in sequence order, the held segments that lie wholly before stream offset `to`
    /// (lines let through).
    fn release_passed(&mut self, flow: &mut Flow, to: u32, out: &mut Output) {
        let Some(insp) = flow.inspect.as_mut() else {
            return;
        };
        let (mut go, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut insp.held)
            .into_iter()
            .partition(|h| !h.fin && h.offset + h.len as i64 <= i64::from(to));
        insp.held = keep;
        go.sort_by_key(|h| (h.offset, h.len));
        let mut freed = 0usize;
        for h in go {
            freed += h.packet.len();
            let end = flow.tcp.base.wrapping_add((h.offset + h.len as i64) as u32);
            if seq_gt(end, flow.tcp.client_next) {
                flow.tcp.client_next = end;
            }
            self.stats.released += 1;
            out.transmit.push(Transmit {
                packet: h.packet,
                meta: h.meta,
            });
        }
        insp.held_packet_bytes -= freed;
        self.account(-(freed as isize));
    }
}

/// Where the ClientHello of a STARTTLS flow starts in its first bytes `bytes`, for a flow that
/// is only watched (its verdict did not need the name): the same walk as
/// [`Shared::follow_starttls`], without holding anything. `Err` says what the bytes are instead:
/// `Incomplete` (wait for more), `NotTls` (the dialogue does not upgrade within the bounds).
pub(super) fn hello_start(proto: Protocol, bytes: &[u8]) -> Result<usize, Found> {
    let mut at = 0usize;
    for _ in 0..=MAX_COMMANDS {
        let rest = &bytes[at.min(bytes.len())..];
        if rest.first() == Some(&22) {
            return Ok(at);
        }
        match next_command(proto, rest) {
            Step::Incomplete => return Err(Found::Incomplete),
            Step::Other => return Err(Found::NotTls),
            Step::Command { len } | Step::Upgrade { len } => at += len,
        }
        if at > MAX_DIALOGUE_BYTES as usize {
            break;
        }
    }
    Err(Found::NotTls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_is_found_after_the_negotiation() {
        let hello = b"\x16\x03\x01\x00\x05\x01";
        let mut s = b"EHLO x\r\nSTARTTLS\r\n".to_vec();
        s.extend_from_slice(hello);
        assert_eq!(hello_start(Protocol::Smtp, &s), Ok(18));
        assert_eq!(hello_start(Protocol::Smtp, hello), Ok(0));
        assert_eq!(
            hello_start(Protocol::Smtp, b"EHLO x\r\nSTART"),
            Err(Found::Incomplete)
        );
        assert_eq!(
            hello_start(Protocol::Smtp, b"EHLO x\r\nMAIL FROM:<a@b>\r\n"),
            Err(Found::NotTls)
        );
        assert_eq!(
            hello_start(Protocol::Imap, b"a CAPABILITY\r\nb STARTTLS\r\n\x16"),
            Ok(26)
        );
        // The bounds: nine lines, or more than 1 KiB, and the dialogue is over.
        let noops = b"NOOP\r\n".repeat(9);
        assert_eq!(hello_start(Protocol::Pop3, &noops), Err(Found::NotTls));
        let ehlo = format!("EHLO {}\r\n", "a".repeat(250)).repeat(5);
        assert_eq!(
            hello_start(Protocol::Smtp, ehlo.as_bytes()),
            Err(Found::NotTls)
        );
    }
}
