//! Reassembly of the first bytes a TCP client sends, for inspection.
//!
//! The buffer covers stream offsets `0..limit` counted from the client's first data byte (ISN + 1).
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
    /// Bytes `0..prefix.len()` of the stream, without gaps.
    prefix: Vec<u8>,
    /// Out-of-order pieces beyond the prefix, by start offset (may overlap each other, but always
    /// agree on the bytes they share).
    pending: Vec<(u32, Vec<u8>)>,
    /// Bytes stored in `pending`.
    pending_bytes: usize,
    /// No segment may reach beyond this offset.
    limit: u32,
}

impl Reassembly {
    /// An empty buffer that accepts stream offsets `0..limit`.
    pub fn new(limit: usize) -> Reassembly {
        Reassembly {
            prefix: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }
    }

    /// The contiguous bytes from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        &self.prefix
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
        if end <= 0 {
            return Insert::Old;
        }
        let (start, data) = if offset < 0 {
            // The part before offset 0 is sequence space the stream does not have (the SYN):
            // only the rest is data.
            (0u32, &data[(-offset) as usize..])
        } else {
            (offset as u32, data)
        };
        if end > i64::from(self.limit) {
            return Insert::Overflow;
        }
        if !self.agrees(start, data) {
            return Insert::Conflict;
        }
        let before = self.stored();
        let plen = self.prefix.len() as u32;
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
        let plen = self.prefix.len();
        if s < plen {
            let upto = e.min(plen);
            if self.prefix[s..upto] != data[..upto - s] {
                return false;
            }
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
            let plen = self.prefix.len();
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
}
