//! What the first client bytes of a TCP flow say about its destination name: the bridge between
//! the reassembly buffer and the protocol parsers of [`crate::inspect`].

use crate::inspect;

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
    Http {
        host: Option<String>,
        connect: bool,
        end: usize,
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
    use inspect::http::{parse_request_head, HttpParse};
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
        TlsParse::NotTls => match parse_request_head(bytes) {
            HttpParse::Complete(req) => {
                let host = match req.host {
                    Some(h) => match normalise(h.as_str()) {
                        Some(h) => Some(h),
                        None => return Found::Malformed,
                    },
                    None => None,
                };
                Found::Http {
                    host,
                    connect: req.is_connect(),
                    end: req.head_len,
                }
            }
            HttpParse::Incomplete => Found::Incomplete,
            HttpParse::Malformed(_) => Found::Malformed,
            HttpParse::NotHttp => Found::NotTls,
        },
    }
}

/// Where to look for a later ClientHello once `found` decided the flow: after the first hello's
/// records, or after the head of an HTTP CONNECT request (a TLS tunnel follows). `None` when
/// nothing is to be watched.
pub(crate) fn watch_from(found: &Found) -> Option<usize> {
    match found {
        Found::Tls { end, .. } => Some(*end),
        Found::Http {
            connect: true, end, ..
        } => Some(*end),
        _ => None,
    }
}
