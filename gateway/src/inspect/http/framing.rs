//! Where an HTTP/1.x request body ends, so that the next request head can be found without
//! reading the body (RFC 9112 6.3 and 7.1).
//!
//! [`body_framing`] reads the framing fields of a head that [`super::parse_request_head`]
//! accepted: a body of `Content-Length` bytes, or a `chunked` one. A head whose framing is
//! ambiguous (`Content-Length` together with `Transfer-Encoding`, codings that do not end in
//! exactly one `chunked`, `Content-Length` values that disagree) is `None`: a server answers it
//! with 400, and a gateway that guessed could disagree with the server on where the next request
//! starts (request smuggling).
//!
//! [`chunk_step`] walks a chunked body one step at a time (a size line, the CRLF after a chunk's
//! data, a trailer line), skipping chunk data without reading it. Lines must end with CRLF and
//! are bounded; a prefix of a valid body is always `Incomplete`, never `Malformed`. Neither
//! function panics or allocates, whatever the input.

/// How a request body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// This many bytes (0 without `Content-Length` and `Transfer-Encoding`).
    Length(usize),
    /// The chunked transfer coding: chunks, a last chunk of size 0, trailer fields.
    Chunked,
}

/// How the request head frames its body; `None` when that is ambiguous, which a server answers
/// with 400 and the gateway refuses: `Transfer-Encoding` together with `Content-Length`, a
/// transfer coding list that does not end with exactly one `chunked`, or a `Content-Length` that
/// is not a plain number or disagrees with another one. `head` is a head the HTTP parser
/// accepted.
pub fn body_framing(head: &[u8]) -> Option<Body> {
    let mut len: Option<usize> = None;
    // The transfer codings of every Transfer-Encoding field, in order: how many there are, how
    // many of them are `chunked`, and whether the last one is.
    let (mut codings, mut chunked, mut last_chunked) = (0usize, 0usize, false);
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                codings += 1;
                last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                chunked += usize::from(last_chunked);
            }
            if codings == 0 {
                return None;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
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
    match (codings, len) {
        (0, len) => Some(Body::Length(len.unwrap_or(0))),
        (_, Some(_)) => None,
        _ if chunked == 1 && last_chunked => Some(Body::Chunked),
        _ => None,
    }
}

/// Longest chunk-size line (size and extensions) or trailer field line looked for.
const MAX_CHUNK_LINE: usize = 4096;

/// Where in a chunked body a [`chunk_step`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPart {
    /// The size line of the next chunk (with its extensions).
    Size,
    /// The CRLF that ends a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk: fields, then an empty line.
    Trailers,
}

/// What [`chunk_step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStep {
    /// More bytes are needed.
    Incomplete,
    /// The body goes on `advance` bytes further, at `next`; only the first `read` of them were
    /// looked at (the rest is chunk data, skipped). `read` is at least 1.
    Next {
        /// Bytes parsed (a size line, a CRLF, a trailer line).
        read: usize,
        /// Bytes to the next part (`read` plus the chunk data).
        advance: usize,
        /// What comes there.
        next: ChunkPart,
    },
    /// The body is complete: the next request starts `read` bytes further (after the empty
    /// line that ends the trailer section).
    End {
        /// Bytes parsed (the empty line).
        read: usize,
    },
    /// Not a valid chunked body: nobody can tell for sure where the next request starts.
    Malformed,
}

/// One step through a chunked body (RFC 9112 7.1): `rest` is the stream from the start of
/// `part`. The chunk data itself is skipped, never read. Lines must end with CRLF: a bare LF or
/// CR is one of the ways a gateway and a server are made to disagree, so it is malformed here.
pub fn chunk_step(part: ChunkPart, rest: &[u8]) -> ChunkStep {
    match part {
        ChunkPart::Size => size_line(rest),
        ChunkPart::DataEnd => match rest {
            [b'\r', b'\n', ..] => ChunkStep::Next {
                read: 2,
                advance: 2,
                next: ChunkPart::Size,
            },
            [] | [b'\r'] => ChunkStep::Incomplete,
            _ => ChunkStep::Malformed,
        },
        ChunkPart::Trailers => {
            let Some(line) = crlf_line(rest) else {
                return incomplete_line(rest);
            };
            match line {
                None => ChunkStep::Malformed,
                // The empty line: the request is complete, the next one starts after it.
                Some([]) => ChunkStep::End { read: 2 },
                Some(field) if field.contains(&b':') && !field[0].is_ascii_whitespace() => {
                    ChunkStep::Next {
                        read: field.len() + 2,
                        advance: field.len() + 2,
                        next: ChunkPart::Trailers,
                    }
                }
                Some(_) => ChunkStep::Malformed,
            }
        }
    }
}

/// `chunk-size [ chunk-ext ] CRLF`, then the chunk's data (or the trailers after a size of 0).
fn size_line(rest: &[u8]) -> ChunkStep {
    let Some(line) = crlf_line(rest) else {
        return incomplete_line(rest);
    };
    let Some(line) = line else {
        return ChunkStep::Malformed;
    };
    // Hex digits, then optionally `;` and extensions (their content does not matter to framing,
    // but they may not hold a bare CR or LF).
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let tail = &line[digits..];
    let ext_ok = tail.is_empty()
        || tail.trim_ascii_start().first() == Some(&b';')
            && tail
                .iter()
                .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b));
    // 15 hex digits cover any length a 64-bit offset can skip.
    if digits == 0 || digits > 15 || !ext_ok {
        return ChunkStep::Malformed;
    }
    let Ok(size) = usize::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap_or("x"), 16)
    else {
        return ChunkStep::Malformed;
    };
    let after_line = line.len() + 2;
    if size == 0 {
        return ChunkStep::Next {
            read: after_line,
            advance: after_line,
            next: ChunkPart::Trailers,
        };
    }
    match after_line.checked_add(size) {
        Some(n) => ChunkStep::Next {
            read: after_line,
            advance: n,
            next: ChunkPart::DataEnd,
        },
        None => ChunkStep::Malformed,
    }
}

/// The line at the start of `bytes` without its CRLF: `None` when no line end is there yet,
/// `Some(None)` when the first line end is not a CRLF (a bare CR or LF).
fn crlf_line(bytes: &[u8]) -> Option<Option<&[u8]>> {
    let end = bytes
        .iter()
        .take(MAX_CHUNK_LINE + 2)
        .position(|&b| b == b'\n' || b == b'\r')?;
    match bytes.get(end..end + 2) {
        Some(b"\r\n") => Some(Some(&bytes[..end])),
        Some(_) => Some(None),
        // A CR as the last byte so far: wait for what follows it.
        None if bytes[end] == b'\r' => None,
        None => Some(None),
    }
}

/// No line end yet: more bytes may complete the line, unless it is already too long.
fn incomplete_line(rest: &[u8]) -> ChunkStep {
    if rest.len() > MAX_CHUNK_LINE + 1 {
        ChunkStep::Malformed
    } else {
        ChunkStep::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_framed_by_content_length_or_chunked() {
        use Body::*;
        let f = |h: &str| body_framing(h.as_bytes());
        assert_eq!(f("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Length(0)));
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
            Some(Length(12))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\ncontent-length:3\r\nContent-Length: 3\r\n\r\n"),
            Some(Length(3))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Chunked)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Some(Chunked)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Some(Chunked)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let f = |h: &str| body_framing(h.as_bytes());
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
            // Request smuggling: both framings at once.
            "POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            // Codings the server cannot frame, or `chunked` twice or not last.
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
        ] {
            assert_eq!(f(head), None, "{head:?}");
        }
    }

    /// Walks a whole chunked body from its first size line; the offset of the next request.
    fn walk(body: &[u8]) -> Result<usize, ChunkStep> {
        let (mut at, mut part) = (0usize, ChunkPart::Size);
        loop {
            match chunk_step(part, &body[at.min(body.len())..]) {
                ChunkStep::Next {
                    advance: n, next, ..
                } => {
                    at += n;
                    part = next;
                }
                ChunkStep::End { read } => return Ok(at + read),
                other => return Err(other),
            }
        }
    }

    #[test]
    fn chunked_bodies_are_walked_to_the_next_request() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        assert_eq!(walk(body), Ok(body.len()));
        let trailers = b"3\r\nabc\r\n0\r\nDigest: x\r\nOther: y\r\n\r\nGET";
        assert_eq!(walk(trailers), Ok(trailers.len() - 3));
        // Chunk data is skipped, never read: a request inside it is data.
        let inner = b"GET / HTTP/1.1\r\nHost: exfil.attacker.test\r\n\r\n";
        let mut hidden = format!("{:x}\r\n", inner.len()).into_bytes();
        hidden.extend_from_slice(inner);
        hidden.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(walk(&hidden), Ok(hidden.len()));
    }

    #[test]
    fn every_prefix_of_a_chunked_body_is_incomplete() {
        let body = b"5\r\nhello\r\n10;x\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..body.len() {
            assert_eq!(
                walk(&body[..cut]),
                Err(ChunkStep::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_chunked_bodies_fail() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-5\r\nhello\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n",
            b"1234567890123456\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\n\n",
            b"5\r\nhello\r\r",
        ] {
            assert_eq!(walk(body), Err(ChunkStep::Malformed), "{body:?}");
        }
        let long = vec![b'a'; MAX_CHUNK_LINE + 2];
        assert_eq!(walk(&long), Err(ChunkStep::Malformed));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// Any chunked body built from random chunks, extensions and trailers is walked to its
        /// exact end, and every cut of it is incomplete, never malformed nor past the end.
        #[test]
        fn encoded_chunked_bodies_round_trip(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..300), 0..8),
            ext in proptest::bool::ANY,
            trailers in proptest::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3),
            upper in proptest::bool::ANY,
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                let size = if upper { format!("{:X}", c.len()) } else { format!("{:x}", c.len()) };
                body.extend_from_slice(size.as_bytes());
                if ext {
                    body.extend_from_slice(b" ;a=b");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in &trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            proptest::prop_assert_eq!(walk(&body), Ok(body.len()));
            for cut in 0..body.len() {
                proptest::prop_assert_eq!(walk(&body[..cut]), Err(ChunkStep::Incomplete));
            }
        }

        /// Random bytes end in a verdict without a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = walk(&bytes);
            let _ = body_framing(&bytes);
        }
    }
}
