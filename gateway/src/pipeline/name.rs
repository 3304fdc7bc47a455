//! What the first client bytes of a TCP flow say about its destination name: the bridge between
//! the reassembly buffer and the protocol parsers of [`crate::inspect`].

use crate::inspect;
use crate::inspect::http::framing::{body_framing, Body, ChunkPart};

/// The outcome of looking at the contiguous first bytes of a client stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// More bytes are needed.
    Incomplete,
    /// A complete ClientHello. `name` is normalised; `None` when it has no server name. `end` is
    /// the stream offset after the record that completed the hello.
    Tls {
        name: Option<String>,
        ech: bool,
        end: usize,
        /// The server name sent when it is not a host name (an IP literal...), escaped and
        /// bounded ([`escape_sent`]): recorded, never matched. `name` is then `None`.
        unusable: Option<String>,
    },
    /// A complete HTTP request head. `host` is the normalised Host (or CONNECT authority) without
    /// the port; `connect` is true for CONNECT, whose tunnel starts at stream offset `end`.
    /// `body` says how the request body that follows is delimited.
    Http {
        host: Option<String>,
        connect: bool,
        end: usize,
        body: Body,
        /// The Host (or authority) sent when it is an IP literal: recorded, never matched.
        unusable: Option<String>,
    },
    /// Neither TLS nor HTTP.
    NotTls,
    /// Looked like TLS or HTTP but is broken (an invalid name included).
    Malformed,
}

fn normalise(name: &str) -> Option<String> {
    policy_engine::normalize_name(name)
        .ok()
        .map(|n| n.into_owned())
}

/// What a client sent as a name that is not a host name, made safe for a log record: printable
/// ASCII as it is, a backslash doubled, any other byte as `\xNN`; `cut` adds `...`. The input is
/// at most [`inspect::tls::MAX_UNUSABLE_NAME_LEN`] bytes, so the result is bounded too.
pub(crate) fn escape_sent(raw: &[u8], cut: bool) -> String {
    let mut out = String::with_capacity(raw.len() + 3);
    for &b in raw.iter().take(inspect::tls::MAX_UNUSABLE_NAME_LEN) {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if cut || raw.len() > inspect::tls::MAX_UNUSABLE_NAME_LEN {
        out.push_str("...");
    }
    out
}

/// Classifies the first bytes of a client stream.
pub(crate) fn classify(bytes: &[u8]) -> Found {
    use inspect::tls::{parse_client_hello, TlsError, TlsParse};
    match parse_client_hello(bytes) {
        TlsParse::Complete(info) => match info.sni {
            Some(n) => match normalise(n.as_str()) {
                Some(name) => Found::Tls {
                    name: Some(name),
                    ech: info.ech,
                    end: info.consumed,
                    unusable: None,
                },
                // A valid host name the policy's normalisation refuses (a bad `xn--` label):
                // not a name any pattern could match either.
                None => Found::Tls {
                    name: None,
                    ech: info.ech,
                    end: info.consumed,
                    unusable: Some(escape_sent(n.as_str().as_bytes(), false)),
                },
            },
            None => Found::Tls {
                name: None,
                ech: info.ech,
                end: info.consumed,
                unusable: None,
            },
        },
        TlsParse::Incomplete { .. } => Found::Incomplete,
        // A well-formed hello whose server name is not a host name: recorded as sent.
        TlsParse::Malformed(TlsError::InvalidHostName(_)) => {
            match inspect::tls::unusable_server_name(bytes) {
                Some(u) => Found::Tls {
                    name: None,
                    ech: u.ech,
                    end: u.consumed,
                    unusable: Some(escape_sent(&u.raw, u.cut)),
                },
                None => Found::Malformed,
            }
        }
        TlsParse::Malformed(_) => Found::Malformed,
        TlsParse::NotTls => classify_request(bytes),
    }
}

/// Whether the first client bytes seen of a flow met without its SYN begin a TLS handshake
/// record that can hold a ClientHello, or an HTTP/1.x request line: only then can the flow's
/// name still be read from them. Anything else (application data, the middle of a record or of
/// a body) cannot tell the name, and the gateway does not guess where a hello might start.
pub(crate) fn opens_hello_or_request(bytes: &[u8]) -> bool {
    use inspect::http::{parse_request_head, HttpParse};
    match bytes {
        // A handshake record of SSL 3.0 to TLS 1.3 whose first message is a ClientHello (or
        // too short to tell yet).
        [22, 3, minor, rest @ ..] => *minor <= 4 && rest.get(2).is_none_or(|&t| t == 1),
        [22] | [22, 3] => true,
        [first, ..] if first.is_ascii_uppercase() => {
            !matches!(parse_request_head(bytes), HttpParse::NotHttp)
        }
        _ => false,
    }
}

/// Classifies bytes that must start an HTTP/1.x request head (`NotTls` when they do not).
pub(crate) fn classify_request(bytes: &[u8]) -> Found {
    use inspect::http::{parse_request_head, HttpParse};
    match parse_request_head(bytes) {
        HttpParse::Complete(req) => {
            let host = match req.host {
                Some(h) => match normalise(h.as_str()) {
                    Some(h) => Some(h),
                    None => return Found::Malformed,
                },
                None => None,
            };
            // A body whose end the gateway cannot tell for sure is where the gateway and the
            // server could disagree on where the next request starts (request smuggling): such
            // a head is refused like any other ambiguous head.
            let Some(body) = body_framing(&bytes[..req.head_len]) else {
                return Found::Malformed;
            };
            Found::Http {
                host,
                connect: req.is_connect(),
                end: req.head_len,
                body,
                unusable: req.authority_ip.map(|ip| match ip {
                    std::net::IpAddr::V4(a) => a.to_string(),
                    std::net::IpAddr::V6(a) => format!("[{a}]"),
                }),
            }
        }
        HttpParse::Incomplete => Found::Incomplete,
        HttpParse::Malformed(_) => Found::Malformed,
        HttpParse::NotHttp => Found::NotTls,
    }
}

/// What the watch of a decided flow looks for next, at a stream offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Another ClientHello, in the TLS records from here.
    Tls(usize),
    /// Another HTTP request head (keep-alive, pipelining).
    Http(usize),
    /// The next part of a chunked request body (a size line, the end of a chunk's data, a
    /// trailer line), followed to the next request.
    Chunked(ChunkPart, usize),
}

impl Watch {
    /// The stream offset to look at.
    pub(crate) fn at(self) -> usize {
        match self {
            Watch::Tls(at) | Watch::Http(at) | Watch::Chunked(_, at) => at,
        }
    }

    /// Whether this watch follows HTTP requests (a head, or a chunked body), which go on for as
    /// long as the connection: the window of the watch then moves along the stream.
    pub(crate) fn follows_requests(self) -> bool {
        !matches!(self, Watch::Tls(_))
    }

    /// The same watch at another offset.
    pub(crate) fn moved_to(self, at: usize) -> Watch {
        match self {
            Watch::Tls(_) => Watch::Tls(at),
            Watch::Http(_) => Watch::Http(at),
            Watch::Chunked(part, _) => Watch::Chunked(part, at),
        }
    }
}

/// Where to look for a later ClientHello or request once `found` decided the flow: after the
/// first hello's records, after the head of an HTTP CONNECT request (a TLS tunnel follows), or
/// at the body of an HTTP request (skipped by its length, or followed chunk by chunk). `None`
/// when there is nothing to watch. Offsets are relative to the start of `found`'s bytes.
pub(crate) fn watch_from(found: &Found) -> Option<Watch> {
    match found {
        Found::Tls { end, .. } => Some(Watch::Tls(*end)),
        Found::Http {
            connect: true, end, ..
        } => Some(Watch::Tls(*end)),
        Found::Http {
            end,
            body: Body::Length(b),
            ..
        } => end.checked_add(*b).map(Watch::Http),
        Found::Http {
            end,
            body: Body::Chunked,
            ..
        } => Some(Watch::Chunked(ChunkPart::Size, *end)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_opens_a_flow_met_mid_stream() {
        // A ClientHello record of TLS 1.0 to 1.3 (or too short to tell), an HTTP request line.
        for yes in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"[..],
            b"\x16\x03\x03\x00\x10\x01",
            b"\x16\x03\x01",
            b"\x16",
            b"GET / HTTP/1.1\r\nHost: a.example\r\n",
            b"CONNECT api.openai.com:443 HTTP/1.1\r\n",
            b"POST /v1",
        ] {
            assert!(opens_hello_or_request(yes), "{yes:?}");
        }
        // Application data, another handshake message (a TLS 1.2 ClientKeyExchange), a record of
        // an unknown version, the middle of a body, a response, another text protocol.
        for no in [
            &b"\x17\x03\x03\x00\x20abc"[..],
            b"\x16\x03\x03\x00\x46\x10\x00\x00\x42",
            b"\x16\x03\x07\x00\x10\x01",
            b"\x16\x02",
            b"{\"model\": \"gpt\"}",
            b"HTTP/1.1 200 OK\r\n",
            b"EHLO client.example\r\n",
            b"",
        ] {
            assert!(!opens_hello_or_request(no), "{no:?}");
        }
    }

    #[test]
    fn what_was_sent_is_escaped_and_bounded() {
        assert_eq!(escape_sent(b"192.0.2.7", false), "192.0.2.7");
        assert_eq!(
            escape_sent(b"a\\b\x00\xff\n", false),
            "a\\\\b\\x00\\xff\\x0a"
        );
        let long = [b'1'; 300];
        let e = escape_sent(&long, false);
        assert_eq!(e.len(), 255 + 3);
        assert!(e.ends_with("..."));
        assert_eq!(escape_sent(b"x", true), "x...");
    }

    #[test]
    fn a_server_name_that_is_not_a_host_name_is_found_with_what_was_sent() {
        // A ClientHello naming 10.0.0.1, built by hand: record, handshake header, body.
        let name = b"10.0.0.1";
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        // In one record, and cut into records of 7 bytes.
        for size in [hs.len(), 7] {
            let mut stream = Vec::new();
            for chunk in hs.chunks(size) {
                stream.extend_from_slice(&[22, 3, 1]);
                stream.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                stream.extend_from_slice(chunk);
            }
            assert_eq!(
                classify(&stream),
                Found::Tls {
                    name: None,
                    ech: false,
                    end: stream.len(),
                    unusable: Some("10.0.0.1".to_owned()),
                }
            );
            // Every prefix is incomplete, never a different answer.
            for n in 0..stream.len() {
                assert_eq!(classify(&stream[..n]), Found::Incomplete, "{size}/{n}");
            }
        }
    }
}
