//! Reassembly of the bytes a TCP client sends, for inspection.
//!
//! The buffer covers stream offsets `origin..origin + limit` counted from the client's first data
//! byte (ISN + 1). The origin starts at 0 and only moves forward, when the pipeline no longer
//! needs the bytes before it ([`Reassembly::advance`]): that is how a keep-alive HTTP connection
//! is followed from request to request with a window of bounded size.
//! Segments may arrive in any order, repeat, and overlap. Bytes that two segments both carry must
//! agree: a disagreement means the gateway and the server could reassemble different streams (an
//! evasion attempt), and [`Reassembly::insert`] reports it so the flow fails closed. Nothing here
//! allocates beyond the per-flow limit.

/// The outcome of [`Reassembly::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Accepted; `added` bytes of new storage were used (for the global held-bytes account).
    Stored {
        /// Bytes of storage added by this segment.
        added: usize,
    },
    /// The segment lies entirely before the buffer's start: nothing to do.
    Old,
    /// Bytes of this segment disagree with bytes already received for the same offsets.
    Conflict,
    /// The segment reaches past the per-flow limit.
    Overflow,
}

/// Contiguous prefix plus pending out-of-order pieces of a client byte stream.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// Bytes `origin..origin + prefix.len()` of the stream, without gaps.
    prefix: Vec<u8>,
    /// Stream offset of `prefix[0]`: bytes before it were let go.
    origin: u32,
    /// Out-of-order pieces beyond the prefix, by start offset (may overlap each other, but always
    /// agree on the bytes they share).
    pending: Vec<(u32, Vec<u8>)>,
    /// Bytes stored in `pending`.
    pending_bytes: usize,
    /// No segment may reach beyond `origin + limit`.
    limit: u32,
}

impl Reassembly {
    /// An empty buffer that accepts stream offsets `0..limit`.
    pub fn new(limit: usize) -> Reassembly {
        Reassembly {
            prefix: Vec::new(),
            origin: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }
    }

    /// The contiguous bytes from [`Reassembly::origin`].
    pub fn contiguous(&self) -> &[u8] {
        &self.prefix
    }

    /// The stream offset of the first byte of [`Reassembly::contiguous`].
    pub fn origin(&self) -> u32 {
        self.origin
    }

    /// The stream offset just after the contiguous bytes.
    pub fn contiguous_end(&self) -> u32 {
        self.origin + self.prefix.len() as u32
    }

    /// Renumbers the stream: offset `origin` becomes `origin - by` (`by` at most the origin), so
    /// that offsets stay small on a connection that goes on for longer than they could count.
    pub fn rebase(&mut self, by: u32) {
        let by = by.min(self.origin);
        self.origin -= by;
        for (start, _) in &mut self.pending {
            *start -= by;
        }
    }

    /// Lets go of every byte before stream offset `to` (no-op when `to` is not past the origin);
    /// the window moves forward with it. Segments that end before the new origin are [`Insert::Old`]
    /// from then on and are not compared with anything: only let go of bytes whose content can no
    /// longer matter (acknowledged by the receiver, or never inspected). Returns the bytes of
    /// storage freed.
    pub fn advance(&mut self, to: u32) -> usize {
        if to <= self.origin {
            return 0;
        }
        let before = self.stored();
        let drop = ((to - self.origin) as usize).min(self.prefix.len());
        self.prefix.drain(..drop);
        if self.prefix.is_empty() {
            // Past the contiguous bytes: pieces that lie before `to` go, a piece across it is cut.
            let mut pending = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            for (start, mut bytes) in pending.drain(..) {
                let end = start + bytes.len() as u32;
                if end <= to {
                    continue;
                }
                let start = if start < to {
                    bytes.drain(..(to - start) as usize);
                    to
                } else {
                    start
                };
                self.pending_bytes += bytes.len();
                self.pending.push((start, bytes));
            }
            self.origin = to;
            self.drain_pending();
        } else {
            self.origin = to;
        }
        before - self.stored()
    }

    /// Total bytes of storage in use.
    pub fn stored(&self) -> usize {
        self.prefix.len() + self.pending_bytes
    }

    /// True when out-of-order pieces are waiting for a gap to fill.
    pub fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds the bytes of a segment that starts at stream offset `offset` (which may be negative
    /// for a segment that starts before the stream, e.g. one that repeats the SYN's sequence
    /// number).
    pub fn insert(&mut self, offset: i64, data: &[u8]) -> Insert {
        if data.is_empty() {
            return Insert::Stored { added: 0 };
        }
        let end = offset + data.len() as i64;
        let origin = i64::from(self.origin);
        if end <= origin {
            return Insert::Old;
        }
        let (start, data) = if offset < origin {
            // The part before the origin is sequence space the stream does not have (the SYN,
            // before offset 0) or bytes already let go: only the rest is looked at.
            (self.origin, &data[(origin - offset) as usize..])
        } else {
            (offset as u32, data)
        };
        if end > origin + i64::from(self.limit) {
            return Insert::Overflow;
        }
        if !self.agrees(start, data) {
            return Insert::Conflict;
        }
        let before = self.stored();
        let plen = self.contiguous_end();
        if start <= plen {
            let skip = (plen - start) as usize;
            if skip < data.len() {
                self.prefix.extend_from_slice(&data[skip..]);
                self.drain_pending();
            }
        } else {
            let covered = self
                .pending
                .iter()
                .any(|(s, b)| *s <= start && start as usize + data.len() <= *s as usize + b.len());
            if !covered {
                let pos = self.pending.partition_point(|(s, _)| *s <= start);
                self.pending.insert(pos, (start, data.to_vec()));
                self.pending_bytes += data.len();
            }
        }
        Insert::Stored {
            added: self.stored().saturating_sub(before),
        }
    }

    /// True when every byte of `data` at `start` that is already known has the same value.
    pub fn agrees(&self, start: u32, data: &[u8]) -> bool {
        let s = start as usize;
        let e = s + data.len();
        let o = self.origin as usize;
        let pend = o + self.prefix.len();
        let lo = s.max(o);
        let hi = e.min(pend);
        if lo < hi && self.prefix[lo - o..hi - o] != data[lo - s..hi - s] {
            return false;
        }
        for (ps, pb) in &self.pending {
            let ps = *ps as usize;
            let pe = ps + pb.len();
            let lo = s.max(ps);
            let hi = e.min(pe);
            if lo < hi && pb[lo - ps..hi - ps] != data[lo - s..hi - s] {
                return false;
            }
        }
        true
    }

    /// Moves pending pieces that now touch the prefix into it.
    fn drain_pending(&mut self) {
        loop {
            let plen = self.contiguous_end() as usize;
            let Some(i) = self.pending.iter().position(|(s, _)| *s as usize <= plen) else {
                return;
            };
            let (s, b) = self.pending.remove(i);
            self.pending_bytes -= b.len();
            let skip = plen - s as usize;
            if skip < b.len() {
                self.prefix.extend_from_slice(&b[skip..]);
            }
        }
    }

    /// Releases every byte; returns how many bytes of storage were freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.stored();
        self.prefix = Vec::new();
        self.pending = Vec::new();
        self.pending_bytes = 0;
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(i: Insert) -> usize {
        match i {
            Insert::Stored { added } => added,
            other => panic!("expected Stored, got {other:?}"),
        }
    }

    #[test]
    fn in_order_and_reverse_order_give_the_same_stream() {
        let data: Vec<u8> = (0..200u8).collect();
        let mut a = Reassembly::new(1000);
        for (i, c) in data.chunks(7).enumerate() {
            stored(a.insert((i * 7) as i64, c));
        }
        let mut b = Reassembly::new(1000);
        let chunks: Vec<_> = data.chunks(7).enumerate().collect();
        for (i, c) in chunks.into_iter().rev() {
            stored(b.insert((i * 7) as i64, c));
        }
        assert_eq!(a.contiguous(), &data[..]);
        assert_eq!(b.contiguous(), &data[..]);
        assert!(!b.has_gap());
        assert_eq!(b.stored(), 200);
    }

    #[test]
    fn duplicates_and_agreeing_overlaps_are_accepted() {
        let mut r = Reassembly::new(100);
        stored(r.insert(0, b"hello"));
        assert_eq!(stored(r.insert(0, b"hello")), 0);
        stored(r.insert(3, b"lo world"));
        assert_eq!(r.contiguous(), b"hello world");
        stored(r.insert(20, b"xyz"));
        stored(r.insert(19, b"wxy"));
        assert!(r.has_gap());
        stored(r.insert(11, b"abcdefghwxyz"));
        assert_eq!(r.contiguous(), b"hello worldabcdefghwxyz");
        assert!(!r.has_gap());
    }

    #[test]
    fn conflicting_overlaps_are_reported() {
        let mut r = Reassembly::new(100);
        stored(r.insert(0, b"hello"));
        assert_eq!(r.insert(2, b"LLo"), Insert::Conflict);
        stored(r.insert(10, b"abc"));
        assert_eq!(r.insert(8, b"xxaXc"), Insert::Conflict);
        assert_eq!(r.contiguous(), b"hello");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any cut of a stream into segments, sent in any order with any repeats, reassembles to
        /// the stream; a repeated segment with one byte changed is always a conflict.
        #[test]
        fn any_order_and_repeats_reassemble(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..600),
            cuts in proptest::collection::vec(1usize..80, 1..40),
            order in proptest::collection::vec(proptest::prelude::any::<u16>(), 40),
            flip in proptest::prelude::any::<u16>(),
        ) {
            let mut segs = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < data.len() {
                let len = cuts[i % cuts.len()].min(data.len() - pos);
                // Overlap the previous segment a little now and then.
                let start = if i % 3 == 2 { pos.saturating_sub(len / 2) } else { pos };
                segs.push((start, data[start..pos + len].to_vec()));
                pos += len;
                i += 1;
            }
            let n = segs.len();
            let mut idx: Vec<usize> = (0..n).chain(0..n / 2).collect();
            for (k, o) in order.iter().enumerate() {
                let a = k % idx.len();
                let b = usize::from(*o) % idx.len();
                idx.swap(a, b);
            }
            let mut r = Reassembly::new(1000);
            for &k in &idx {
                let (off, bytes) = &segs[k];
                let res = r.insert(*off as i64, bytes);
                proptest::prop_assert!(matches!(res, Insert::Stored { .. }), "{:?}", res);
            }
            proptest::prop_assert_eq!(r.contiguous(), &data[..]);
            proptest::prop_assert!(!r.has_gap());
            let (off, bytes) = &segs[usize::from(flip) % n];
            let mut bad = bytes.clone();
            let at = usize::from(flip) % bad.len();
            bad[at] ^= 0x80;
            proptest::prop_assert_eq!(r.insert(*off as i64, &bad), Insert::Conflict);
        }
    }

    #[test]
    fn bounds_and_old_segments() {
        let mut r = Reassembly::new(10);
        assert_eq!(r.insert(5, b"123456"), Insert::Overflow);
        assert_eq!(r.insert(-3, b"abc"), Insert::Old);
        stored(r.insert(-1, b"Xab"));
        assert_eq!(r.contiguous(), b"ab");
        assert_eq!(r.clear(), 2);
        assert_eq!(r.stored(), 0);
    }

    #[test]
    fn advancing_lets_go_of_the_front_and_moves_the_window() {
        let mut r = Reassembly::new(8);
        stored(r.insert(0, b"abcdef"));
        assert_eq!(r.advance(4), 4);
        assert_eq!((r.origin(), r.contiguous(), r.stored()), (4, &b"ef"[..], 2));
        // Moving back is a no-op.
        assert_eq!(r.advance(2), 0);
        // The window now ends at 4 + 8.
        stored(r.insert(6, b"ghijkl"));
        assert_eq!(r.contiguous(), b"efghijkl");
        assert_eq!(r.insert(12, b"m"), Insert::Overflow);
        // Bytes before the origin are old and not compared; a segment across it is cut.
        assert_eq!(r.insert(0, b"XXXX"), Insert::Old);
        assert!(r.agrees(0, b"XXXXef"));
        assert!(!r.agrees(0, b"XXXXeX"));
        stored(r.insert(2, b"XXefg"));
        assert_eq!(r.contiguous(), b"efghijkl");
        assert_eq!(r.insert(3, b"Xeg"), Insert::Conflict);
    }

    #[test]
    fn advancing_past_the_contiguous_bytes_keeps_later_pieces() {
        let mut r = Reassembly::new(16);
        stored(r.insert(0, b"ab"));
        stored(r.insert(6, b"ghij"));
        stored(r.insert(12, b"mn"));
        // Jump to 8: "ab" and the front of "ghij" go, "ij" becomes the contiguous start.
        assert_eq!(r.advance(8), 4);
        assert_eq!((r.origin(), r.contiguous()), (8, &b"ij"[..]));
        assert!(r.has_gap());
        stored(r.insert(10, b"kl"));
        assert_eq!(r.contiguous(), b"ijklmn");
        assert!(!r.has_gap());
        assert_eq!(r.contiguous_end(), 14);
        // Jump past everything: empty, and the window starts there.
        assert_eq!(r.advance(30), 6);
        assert_eq!((r.origin(), r.stored()), (30, 0));
        stored(r.insert(30, b"x"));
        assert_eq!(r.contiguous(), b"x");
        assert_eq!(r.insert(40, b"0123456789"), Insert::Overflow);
    }

    #[test]
    fn rebasing_renumbers_without_changing_the_bytes() {
        let mut r = Reassembly::new(16);
        stored(r.insert(0, b"abcdefgh"));
        r.advance(6);
        stored(r.insert(12, b"mn"));
        r.rebase(6);
        assert_eq!((r.origin(), r.contiguous()), (0, &b"gh"[..]));
        stored(r.insert(2, b"ijkl"));
        assert_eq!(r.contiguous(), b"ghijklmn");
        assert!(!r.has_gap());
        assert_eq!(r.insert(1, b"X"), Insert::Conflict);
        // Never below zero.
        r.rebase(100);
        assert_eq!(r.origin(), 0);
    }
}
