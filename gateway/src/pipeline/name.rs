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
    },
    /// A complete HTTP request head. `host` is the normalised Host (or CONNECT authority) without
    /// the port; `connect` is true for CONNECT, whose tunnel starts at stream offset `end`.
    /// `body` says how the request body that follows is delimited.
    Http {
        host: Option<String>,
        connect: bool,
        end: usize,
        body: Body,
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

/// Classifies the first bytes of a client stream.
pub(crate) fn classify(bytes: &[u8]) -> Found {
    use inspect::tls::{parse_client_hello, TlsParse};
    match parse_client_hello(bytes) {
        TlsParse::Complete(info) => match info.sni {
            Some(n) => match normalise(n.as_str()) {
                Some(name) => Found::Tls {
                    name: Some(name),
                    ech: info.ech,
                    end: info.consumed,
                },
                None => Found::Malformed,
            },
            None => Found::Tls {
                name: None,
                ech: info.ech,
                end: info.consumed,
            },
        },
        TlsParse::Incomplete { .. } => Found::Incomplete,
        TlsParse::Malformed(_) => Found::Malformed,
        TlsParse::NotTls => classify_request(bytes),
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
