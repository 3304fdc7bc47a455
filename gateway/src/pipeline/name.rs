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
    /// `body` is the length of the request body when the head frames it by `Content-Length` (or
    /// has none), `None` when the body length is not known from the head (`Transfer-Encoding`,
    /// or a `Content-Length` that is invalid or repeated with another value).
    Http {
        host: Option<String>,
        connect: bool,
        end: usize,
        body: Option<usize>,
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
            Found::Http {
                host,
                connect: req.is_connect(),
                end: req.head_len,
                body: body_len(&bytes[..req.head_len]),
            }
        }
        HttpParse::Incomplete => Found::Incomplete,
        HttpParse::Malformed(_) => Found::Malformed,
        HttpParse::NotHttp => Found::NotTls,
    }
}

/// What the watch of a decided flow looks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Another ClientHello, in the TLS records from this stream offset.
    Tls(usize),
    /// Another HTTP request head (keep-alive, pipelining), at this stream offset.
    Http(usize),
}

/// Where to look for a later ClientHello or request once `found` decided the flow: after the
/// first hello's records, after the head of an HTTP CONNECT request (a TLS tunnel follows), or
/// after an HTTP request and its body. `None` when nothing is to be watched (the body of the
/// request is not framed by a known length).
pub(crate) fn watch_from(found: &Found) -> Option<Watch> {
    match found {
        Found::Tls { end, .. } => Some(Watch::Tls(*end)),
        Found::Http {
            connect: true, end, ..
        } => Some(Watch::Tls(*end)),
        Found::Http {
            end, body: Some(b), ..
        } => end.checked_add(*b).map(Watch::Http),
        _ => None,
    }
}

/// The body length a request head declares: 0 without `Content-Length` and
/// `Transfer-Encoding`; `None` with `Transfer-Encoding` (chunked bodies are not followed) or a
/// `Content-Length` that is not a plain number or disagrees with another one. `head` is a head
/// the HTTP parser accepted.
pub(crate) fn body_len(head: &[u8]) -> Option<usize> {
    let mut len: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: usize = std::str::from_utf8(value).ok()?.parse().ok()?;
            if len.is_some_and(|l| l != n) {
                return None;
            }
            len = Some(n);
        }
    }
    Some(len.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_lengths_come_from_content_length_only() {
        assert_eq!(body_len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(0));
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
            Some(12)
        );
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\ncontent-length:3\r\nContent-Length: 3\r\n\r\n"),
            Some(3)
        );
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            None
        );
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
            None
        );
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n"),
            None
        );
    }
}
