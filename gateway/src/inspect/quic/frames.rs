//! The frames of a decrypted Initial payload (RFC 9000 12.4, 19) and the reassembly of the
//! CRYPTO stream that carries the ClientHello.
//!
//! The stream is gathered into one fixed buffer of [`MAX_HELLO_LEN`] bytes, allocated once per
//! flow, with the received byte ranges kept in a small fixed array. Frames may arrive in any
//! order, repeated or overlapping; bytes received twice must agree (a client that sends two
//! different versions of one byte is trying to show the gateway one name and the server
//! another), and the number of frames and of disjoint ranges is bounded.

use super::packet::Reader;
use super::QuicError;
use crate::inspect::tls::MAX_HELLO_LEN;

/// Most CRYPTO frames accepted per flow. Real clients use 1 to about 20 (Chromium splits its
/// hello into many small frames).
pub const MAX_CRYPTO_FRAMES: usize = 256;

/// Most disjoint byte ranges held while the stream has gaps.
pub const MAX_RANGES: usize = 64;

/// Room before stream byte 0 for a TLS record header, so that the reassembled hello is handed
/// to the TLS parser as one record, in place.
const RECORD_HDR: usize = 5;

const FRAME_PADDING: u64 = 0x00;
const FRAME_PING: u64 = 0x01;
const FRAME_ACK: u64 = 0x02;
const FRAME_ACK_ECN: u64 = 0x03;
const FRAME_CRYPTO: u64 = 0x06;
const FRAME_CONNECTION_CLOSE: u64 = 0x1c;

const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// The client's Initial CRYPTO stream, from offset 0 up to [`MAX_HELLO_LEN`].
pub struct CryptoStream {
    buf: Box<[u8]>,
    /// Received ranges: sorted, disjoint and not adjacent.
    ranges: [(usize, usize); MAX_RANGES],
    n: usize,
    frames: usize,
}

impl std::fmt::Debug for CryptoStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoStream")
            .field("ranges", &&self.ranges[..self.n])
            .field("frames", &self.frames)
            .finish()
    }
}

impl Default for CryptoStream {
    fn default() -> Self {
        CryptoStream::new()
    }
}

impl CryptoStream {
    /// An empty stream (allocates its buffer).
    pub fn new() -> CryptoStream {
        CryptoStream {
            buf: vec![0u8; RECORD_HDR + MAX_HELLO_LEN].into_boxed_slice(),
            ranges: [(0, 0); MAX_RANGES],
            n: 0,
            frames: 0,
        }
    }

    /// Forgets everything received (a new connection attempt after Version Negotiation). The
    /// frame count is kept: it bounds the work of the whole flow.
    pub fn reset(&mut self) {
        self.n = 0;
        // A settled stream kept only the first hello: the new one may be larger.
        if self.buf.len() < RECORD_HDR + MAX_HELLO_LEN {
            self.buf = vec![0u8; RECORD_HDR + MAX_HELLO_LEN].into_boxed_slice();
        }
    }

    /// Gives back the room past the bytes received. Once the ClientHello is whole and the flow
    /// permitted, only the hello is kept, to check the CRYPTO data of later Initials against it;
    /// data past it is ignored from then on, as data past the largest hello is before.
    pub fn settle(&mut self) {
        let keep = self.ranges[..self.n].last().map_or(0, |r| r.1);
        self.buf = self.buf[..RECORD_HDR + keep].into();
    }

    /// Bytes of its buffer.
    pub fn footprint(&self) -> usize {
        self.buf.len()
    }

    /// Number of CRYPTO frames received.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Adds the data of one CRYPTO frame.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), QuicError> {
        self.frames += 1;
        if self.frames > MAX_CRYPTO_FRAMES {
            return Err(QuicError::TooManyCryptoFrames);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e < 1 << 62)
            .ok_or(QuicError::CryptoOffsetTooLarge)?;
        // Bytes past the largest hello (or, once settled, past the hello) are never needed; a
        // hello that claims to reach there is refused from its header.
        let cap = (self.buf.len() - RECORD_HDR) as u64;
        if offset >= cap || data.is_empty() {
            return Ok(());
        }
        // Both below the cap (16 KiB): the conversions are exact.
        let (s, e) = (offset as usize, end.min(cap) as usize);
        let data = &data[..e - s];
        for &(rs, re) in &self.ranges[..self.n] {
            let (os, oe) = (s.max(rs), e.min(re));
            if os < oe && self.buf[RECORD_HDR + os..RECORD_HDR + oe] != data[os - s..oe - s] {
                return Err(QuicError::InconsistentCrypto);
            }
        }
        self.buf[RECORD_HDR + s..RECORD_HDR + e].copy_from_slice(data);
        self.merge(s, e)
    }

    /// Records `[s, e)` as received, merging it with the ranges it touches.
    fn merge(&mut self, mut s: usize, mut e: usize) -> Result<(), QuicError> {
        let mut out = [(0usize, 0usize); MAX_RANGES];
        let mut k = 0usize;
        let mut placed = false;
        let mut push = |r: (usize, usize), k: &mut usize| -> Result<(), QuicError> {
            let slot = out.get_mut(*k).ok_or(QuicError::TooFragmented)?;
            *slot = r;
            *k += 1;
            Ok(())
        };
        for &(rs, re) in &self.ranges[..self.n] {
            if re < s {
                push((rs, re), &mut k)?;
            } else if rs > e {
                if !placed {
                    push((s, e), &mut k)?;
                    placed = true;
                }
                push((rs, re), &mut k)?;
            } else {
                s = s.min(rs);
                e = e.max(re);
            }
        }
        if !placed {
            push((s, e), &mut k)?;
        }
        self.ranges = out;
        self.n = k;
        Ok(())
    }

    /// The whole ClientHello, framed as one TLS handshake record, once every byte of it has
    /// arrived; `None` while bytes are missing.
    pub fn hello(&mut self) -> Result<Option<&[u8]>, QuicError> {
        let have = match self.ranges[..self.n] {
            [(0, end), ..] => end,
            _ => return Ok(None),
        };
        let msg = &self.buf[RECORD_HDR..RECORD_HDR + have];
        let &[ty, l0, l1, l2, ..] = msg else {
            return match msg.first() {
                Some(&ty) if ty != HANDSHAKE_CLIENT_HELLO => Err(QuicError::NotClientHello(ty)),
                _ => Ok(None),
            };
        };
        if ty != HANDSHAKE_CLIENT_HELLO {
            return Err(QuicError::NotClientHello(ty));
        }
        let total = 4 + (usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2));
        if total > MAX_HELLO_LEN {
            return Err(QuicError::HelloTooLarge(total));
        }
        if have < total {
            return Ok(None);
        }
        // total <= MAX_HELLO_LEN = 2^14 fits the record length field and the record limit.
        let len = (total as u16).to_be_bytes();
        self.buf[..RECORD_HDR].copy_from_slice(&[22, 3, 3, len[0], len[1]]);
        Ok(Some(&self.buf[..RECORD_HDR + total]))
    }
}

/// Walks the frames of one decrypted Initial payload, feeding CRYPTO data to `stream`. Only the
/// frames allowed in Initial packets are accepted (RFC 9000 12.4); anything else is a protocol
/// violation and fails the flow.
pub fn walk_frames(payload: &[u8], stream: &mut CryptoStream) -> Result<(), QuicError> {
    let mut r = Reader::new(payload);
    while !r.is_empty() {
        let ty = r.varint().ok_or(QuicError::FrameTruncated)?;
        match ty {
            FRAME_PADDING => {
                // Runs of padding are the bulk of most Initials: skip them in one step.
                let zeros = r.remaining().iter().take_while(|&&b| b == 0).count();
                r.take(zeros);
            }
            FRAME_PING => {}
            FRAME_ACK | FRAME_ACK_ECN => skip_ack(&mut r, ty == FRAME_ACK_ECN)?,
            FRAME_CRYPTO => {
                let offset = r.varint().ok_or(QuicError::FrameTruncated)?;
                let data = r.prefixed().ok_or(QuicError::FrameTruncated)?;
                stream.insert(offset, data)?;
            }
            FRAME_CONNECTION_CLOSE => {
                r.varint().ok_or(QuicError::FrameTruncated)?;
                r.varint().ok_or(QuicError::FrameTruncated)?;
                r.prefixed().ok_or(QuicError::FrameTruncated)?;
            }
            other => return Err(QuicError::UnexpectedFrame(other)),
        }
    }
    Ok(())
}

/// Skips an ACK frame (RFC 9000 19.3). Each range costs at least two bytes, so a huge range
/// count runs out of input rather than looping.
fn skip_ack(r: &mut Reader<'_>, ecn: bool) -> Result<(), QuicError> {
    let mut field = || r.varint().ok_or(QuicError::FrameTruncated);
    field()?; // largest acknowledged
    field()?; // delay
    let count = field()?;
    field()?; // first range
    let mut i = 0u64;
    while i < count {
        field()?; // gap
        field()?; // range length
        i += 1;
    }
    if ecn {
        for _ in 0..3 {
            field()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(len: usize) -> Vec<u8> {
        let mut m = vec![1, 0, (len >> 8) as u8, len as u8];
        m.extend((0..len).map(|i| i as u8));
        m
    }

    #[test]
    fn reassembles_out_of_order_and_overlapping() {
        let m = hello(100);
        let mut s = CryptoStream::new();
        s.insert(50, &m[50..]).unwrap();
        assert_eq!(s.hello().unwrap(), None);
        s.insert(10, &m[10..60]).unwrap();
        s.insert(0, &m[..3]).unwrap();
        assert_eq!(s.hello().unwrap(), None);
        s.insert(2, &m[2..12]).unwrap();
        let rec = s.hello().unwrap().unwrap();
        assert_eq!(&rec[..5], &[22, 3, 3, 0, 104]);
        assert_eq!(&rec[5..], &m[..]);
    }

    #[test]
    fn disagreeing_overlap_fails() {
        let m = hello(20);
        let mut s = CryptoStream::new();
        s.insert(0, &m[..10]).unwrap();
        let mut other = m[5..15].to_vec();
        other[0] ^= 1;
        assert_eq!(s.insert(5, &other), Err(QuicError::InconsistentCrypto));
    }

    #[test]
    fn bounds() {
        let mut s = CryptoStream::new();
        for i in 0..MAX_RANGES {
            s.insert(10 + 3 * i as u64, &[7]).unwrap();
        }
        assert_eq!(s.insert(5000, &[7]), Err(QuicError::TooFragmented));
        let mut s = CryptoStream::new();
        for _ in 0..MAX_CRYPTO_FRAMES {
            s.insert(0, &[1]).unwrap();
        }
        assert_eq!(s.insert(0, &[1]), Err(QuicError::TooManyCryptoFrames));
        let mut s = CryptoStream::new();
        assert_eq!(
            s.insert((1 << 62) - 1, &[1, 2]),
            Err(QuicError::CryptoOffsetTooLarge)
        );
        s.insert(MAX_HELLO_LEN as u64, &[1]).unwrap();
        s.insert(0, &[1, 0x01, 0, 0]).unwrap();
        assert_eq!(s.hello(), Err(QuicError::HelloTooLarge(0x10004)));
        let mut s = CryptoStream::new();
        s.insert(0, &[2]).unwrap();
        assert_eq!(s.hello(), Err(QuicError::NotClientHello(2)));
    }

    #[test]
    fn frames() {
        let mut s = CryptoStream::new();
        // PADDING, PING, ACK (one extra range), ACK_ECN, CRYPTO, CONNECTION_CLOSE.
        let payload = [
            0, 0, 1, 2, 5, 0, 1, 0, 1, 1, 3, 5, 0, 0, 0, 0, 0, 0, 6, 0, 2, 1, 0, 0x1c, 0, 0, 1,
            b'x',
        ];
        walk_frames(&payload, &mut s).unwrap();
        assert_eq!(s.frames(), 1);
        for cut in 0..payload.len() {
            let _ = walk_frames(&payload[..cut], &mut CryptoStream::new());
        }
        assert_eq!(
            walk_frames(&[0x08, 0], &mut s),
            Err(QuicError::UnexpectedFrame(8))
        );
        assert_eq!(
            walk_frames(&[2, 0, 0, 0x3f], &mut s),
            Err(QuicError::FrameTruncated)
        );
    }
}
