//! Any bytes as a request head followed by its body, or as a chunked body on its own: body
//! framing and the chunk walk must not panic, and every step must stay inside its input.
//!
//! Invariants: a `Content-Length` is at most 12 digits; each chunk step reads at least one byte,
//! no more than it was given, and gives the same answer from only the bytes it says it read;
//! a walk that reaches the end of the body is `Incomplete` (never `Malformed`) on any shorter
//! prefix.
#![no_main]

use bulkhead_gateway::inspect::http::framing::{body_framing, chunk_step, Body, ChunkPart, ChunkStep};
use bulkhead_gateway::inspect::http::{parse_request_head, HttpParse};
use libfuzzer_sys::fuzz_target;

/// Where a walk of a chunked body stopped.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The body ended; the next request starts at this offset.
    End(usize),
    /// The bytes ran out.
    Incomplete,
    /// Not a chunked body.
    Malformed,
}

/// Walks a chunked body from its first size line, checking every step.
fn walk(body: &[u8]) -> Walk {
    let (mut at, mut part) = (0usize, ChunkPart::Size);
    loop {
        let rest = &body[at..];
        let step = chunk_step(part, rest);
        match step {
            ChunkStep::Next {
                read,
                advance,
                next,
            } => {
                assert!(read >= 1 && read <= rest.len() && read <= advance, "{step:?}");
                assert_eq!(chunk_step(part, &rest[..read]), step);
                if advance > rest.len() {
                    // Chunk data still to come: the walk needs more bytes.
                    return Walk::Incomplete;
                }
                at += advance;
                part = next;
            }
            ChunkStep::End { read } => {
                assert!(read >= 1 && read <= rest.len(), "{step:?}");
                assert_eq!(chunk_step(part, &rest[..read]), step);
                return Walk::End(at + read);
            }
            ChunkStep::Incomplete => return Walk::Incomplete,
            ChunkStep::Malformed => return Walk::Malformed,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let body = match parse_request_head(data) {
        HttpParse::Complete(info) => match body_framing(&data[..info.head_len]) {
            Some(Body::Chunked) => &data[info.head_len..],
            Some(Body::Length(n)) => {
                assert!(n < 1_000_000_000_000);
                return;
            }
            None => return,
        },
        // Not a head: the bytes are framed as if they were one, and walked as a chunked body.
        _ => {
            if let Some(Body::Length(n)) = body_framing(data) {
                assert!(n < 1_000_000_000_000);
            }
            data
        }
    };
    if let Walk::End(end) = walk(body) {
        assert!(end <= body.len());
        for cut in [0, end / 2, end.saturating_sub(1)] {
            if cut < end {
                assert_eq!(walk(&body[..cut]), Walk::Incomplete, "cut at {cut} of {end}");
            }
        }
    }
});
