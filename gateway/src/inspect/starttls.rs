//! The client's side of a plaintext dialogue that upgrades to TLS: SMTP (RFC 3207), IMAP
//! (RFC 3501 6.2.1) and POP3 (RFC 2595 4).
//!
//! Mail connections on ports 25, 587, 143 and 110 start in plaintext, and the client asks for TLS
//! with `STARTTLS` (SMTP, IMAP: a tagged command) or `STLS` (POP3); its ClientHello follows the
//! server's go-ahead. [`next_command`] reads one client command line at a time and says whether
//! it may pass before the name is known:
//!
//! - commands that only negotiate (`EHLO`/`HELO` with a domain or an address literal, `NOOP`,
//!   `RSET`; `CAPABILITY`, `NOOP`; `CAPA`, `NOOP`) are [`Step::Command`];
//! - the upgrade itself is [`Step::Upgrade`];
//! - anything else is [`Step::Other`]: a command that carries data or credentials (`MAIL`, `RCPT`,
//!   `DATA`, `AUTH`, `LOGIN`, `USER`, `PASS`, ...), `QUIT`, a line longer than
//!   [`MAX_LINE_LEN`], a bare CR or LF, bytes that are not a command line. The connection does
//!   not upgrade (or not before it has said something the gateway will not pass unseen).
//!
//! Lines end with CRLF and nothing else: a server that reads lines differently could otherwise
//! see a command the gateway did not. Nothing here allocates; every length is checked first.

/// A mail protocol that upgrades with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP and submission (ports 25 and 587): `STARTTLS`.
    Smtp,
    /// IMAP (port 143): `tag STARTTLS`.
    Imap,
    /// POP3 (port 110): `STLS`.
    Pop3,
}

impl Protocol {
    /// The protocol whose well-known port `port` is, if any.
    pub fn for_port(port: u16) -> Option<Protocol> {
        match port {
            25 | 587 => Some(Protocol::Smtp),
            143 => Some(Protocol::Imap),
            110 => Some(Protocol::Pop3),
            _ => None,
        }
    }
}

/// Longest command line, CRLF included (SMTP's limit, RFC 5321 4.5.3.1.4; more than any
/// negotiation command of the three protocols needs).
pub const MAX_LINE_LEN: usize = 512;

/// Longest IMAP tag accepted.
pub const MAX_TAG_LEN: usize = 32;

/// What the next client bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A valid prefix of a command line: more bytes are needed.
    Incomplete,
    /// A negotiation command of `len` bytes (CRLF included) that may pass before the upgrade.
    Command {
        /// Length of the line.
        len: usize,
    },
    /// The command that asks for TLS, `len` bytes: the ClientHello follows the server's answer.
    Upgrade {
        /// Length of the line.
        len: usize,
    },
    /// Anything else: see the module docs.
    Other,
}

/// Reads the command line at the start of `bytes`.
pub fn next_command(proto: Protocol, bytes: &[u8]) -> Step {
    let window = &bytes[..bytes.len().min(MAX_LINE_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if bytes.len() >= MAX_LINE_LEN || !window.iter().all(|&b| (0x20..0x7f).contains(&b)) {
            return Step::Other;
        }
        return Step::Incomplete;
    };
    let line = &window[..cr];
    if !line.iter().all(|&b| (0x20..0x7f).contains(&b)) || window[cr] != b'\r' {
        return Step::Other;
    }
    match window.get(cr + 1) {
        None if cr + 1 < MAX_LINE_LEN => return Step::Incomplete,
        Some(b'\n') => {}
        _ => return Step::Other,
    }
    let len = cr + 2;
    match proto {
        Protocol::Smtp => smtp(line, len),
        Protocol::Imap => imap(line, len),
        Protocol::Pop3 => pop3(line, len),
    }
}

/// Splits `line` at its first space: the verb and what follows.
fn verb(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match line.iter().position(|&b| b == b' ') {
        Some(sp) => (&line[..sp], Some(&line[sp + 1..])),
        None => (line, None),
    }
}

fn smtp(line: &[u8], len: usize) -> Step {
    let (v, arg) = verb(line);
    let is = |w: &[u8]| v.eq_ignore_ascii_case(w);
    match arg {
        None if is(b"STARTTLS") => Step::Upgrade { len },
        None if is(b"NOOP") || is(b"RSET") => Step::Command { len },
        // The client's own name: a domain or an address literal, nothing that could carry more.
        Some(a) if (is(b"EHLO") || is(b"HELO")) && is_domain_or_literal(a) => Step::Command { len },
        _ => Step::Other,
    }
}

fn is_domain_or_literal(a: &[u8]) -> bool {
    (1..=255).contains(&a.len())
        && a.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

fn imap(line: &[u8], len: usize) -> Step {
    let (tag, rest) = verb(line);
    let tag_ok = (1..=MAX_TAG_LEN).contains(&tag.len())
        && tag
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let Some(cmd) = rest.filter(|_| tag_ok) else {
        return Step::Other;
    };
    if cmd.eq_ignore_ascii_case(b"STARTTLS") {
        Step::Upgrade { len }
    } else if cmd.eq_ignore_ascii_case(b"CAPABILITY") || cmd.eq_ignore_ascii_case(b"NOOP") {
        Step::Command { len }
    } else {
        Step::Other
    }
}

fn pop3(line: &[u8], len: usize) -> Step {
    if line.eq_ignore_ascii_case(b"STLS") {
        Step::Upgrade { len }
    } else if line.eq_ignore_ascii_case(b"CAPA") || line.eq_ignore_ascii_case(b"NOOP") {
        Step::Command { len }
    } else {
        Step::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_commands_pass_and_the_upgrade_is_found() {
        use Protocol::*;
        for (p, line, want) in [
            (Smtp, &b"EHLO client.example.org\r\n"[..], "cmd"),
            (Smtp, b"ehlo [192.0.2.1]\r\n", "cmd"),
            (Smtp, b"HELO x\r\n", "cmd"),
            (Smtp, b"NOOP\r\n", "cmd"),
            (Smtp, b"STARTTLS\r\n", "up"),
            (Smtp, b"starttls\r\n", "up"),
            (Imap, b"a001 CAPABILITY\r\n", "cmd"),
            (Imap, b"A2 starttls\r\n", "up"),
            (Pop3, b"CAPA\r\n", "cmd"),
            (Pop3, b"STLS\r\n", "up"),
        ] {
            let got = match next_command(p, line) {
                Step::Command { len } if len == line.len() => "cmd",
                Step::Upgrade { len } if len == line.len() => "up",
                other => panic!("{p:?} {line:?}: {other:?}"),
            };
            assert_eq!(got, want, "{line:?}");
            // Every proper prefix needs more bytes.
            for n in 0..line.len() {
                assert_eq!(
                    next_command(p, &line[..n]),
                    Step::Incomplete,
                    "{line:?}[..{n}]"
                );
            }
            // What follows the line does not change it.
            let mut more = line.to_vec();
            more.extend_from_slice(b"\x16\x03\x01");
            assert_eq!(next_command(p, &more), next_command(p, line));
        }
    }

    #[test]
    fn data_credentials_and_odd_lines_are_other() {
        use Protocol::*;
        for (p, line) in [
            (Smtp, &b"MAIL FROM:<a@b>\r\n"[..]),
            (Smtp, b"AUTH PLAIN AGFAYg==\r\n"),
            (Smtp, b"DATA\r\n"),
            (Smtp, b"QUIT\r\n"),
            (Smtp, b"EHLO secret data here\r\n"),
            (Smtp, b"EHLO \r\n"),
            (Smtp, b"STARTTLS now\r\n"),
            (Smtp, b"EHLO x\n"),
            (Smtp, b"EHLO x\rY\n"),
            (Smtp, b"EHLO x\x00\r\n"),
            (Smtp, b"\x16\x03\x01\x00"),
            (Imap, b"a LOGIN user pass\r\n"),
            (Imap, b"STARTTLS\r\n"),
            (Imap, b"a{5} STARTTLS\r\n"),
            (Pop3, b"USER bob\r\n"),
            (Pop3, b"STLS x\r\n"),
        ] {
            assert_eq!(next_command(p, line), Step::Other, "{p:?} {line:?}");
        }
        let long = [b'a'; MAX_LINE_LEN];
        assert_eq!(next_command(Smtp, &long), Step::Other);
        let mut long = b"EHLO ".to_vec();
        long.extend([b'a'; 600]);
        assert_eq!(next_command(Smtp, &long), Step::Other);
        assert_eq!(Protocol::for_port(587), Some(Smtp));
        assert_eq!(Protocol::for_port(443), None);
    }
}
