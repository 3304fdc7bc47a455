//! The server name of a QUIC connection, read from the client's Initial packets (QUIC v1,
//! RFC 9000 / RFC 9001, and v2, RFC 9369).
//!
//! Initial packets are encrypted, but with keys anyone can derive from the packet itself (the
//! version's public salt and the Destination Connection ID), so a gateway can read the
//! ClientHello without being a party to the connection. [`InitialCollector`] takes the client's
//! UDP datagrams of one flow, in arrival order, and for each datagram:
//!
//! 1. splits it into its coalesced packets ([`packet`]): Initials are read, 0-RTT and
//!    Handshake packets skipped, and a short-header packet ends the datagram;
//! 2. removes header protection, recovers the packet number and opens the AEAD ([`keys`]);
//! 3. walks the frames and adds CRYPTO data to one reassembly buffer ([`frames`]), in any
//!    order, shuffled, repeated or overlapping (bytes received twice must agree);
//! 4. once the ClientHello is whole, runs the TLS parser of [`super::tls`] on it.
//!
//! Connection IDs and versions, as real clients use them:
//! - After a Retry, the client's Initials carry the server's new DCID and are protected with
//!   keys derived from it; after the server's first Initial, they carry the server's SCID but
//!   keep the original keys. Each Initial is tried under the keys of its own DCID if known, then
//!   the latest keys of its version, then keys derived from its DCID: at most
//!   [`MAX_KEY_CONTEXTS`] derivations per flow.
//! - After a Version Negotiation the client starts over in another version with a new
//!   ClientHello: the CRYPTO stream is reset once, and packets of the abandoned version are
//!   then ignored.
//! - Once a ClientHello is whole, an Initial that needs keys derived from a new DCID starts a
//!   new attempt (a new connection on the same ports, or the hello sent again after a Retry):
//!   the stream is reset and packets under the earlier keys are ignored. Before the hello is
//!   whole, every Initial feeds one stream, whose bytes must agree.
//!
//! Bounds (each fails the flow closed with its own [`QuicError`]): [`MAX_INITIAL_BYTES`] of
//! Initial packets, [`frames::MAX_CRYPTO_FRAMES`] CRYPTO frames, [`frames::MAX_RANGES`] gaps in
//! the stream, a ClientHello of at most [`super::tls::MAX_HELLO_LEN`] bytes, and
//! [`MAX_UNDECRYPTABLE`] Initials that fail authentication. The collector allocates its
//! buffers once, when the first Initial arrives; later datagrams reuse them.
//!
//! A hello is never reported from a prefix: until every byte of it is in, the answer is
//! [`QuicParse::Incomplete`].

pub mod build;
pub mod frames;
pub mod keys;
pub mod packet;

#[cfg(test)]
mod tests;

use self::frames::{walk_frames, CryptoStream};
use self::keys::InitialKeys;
pub use self::keys::Version;
use self::packet::{open_initial, parse_packet, LongHeader, LongType, Packet, MAX_CID_LEN};
use super::tls::{parse_client_hello, ClientHelloInfo, TlsError, TlsParse};

/// Most sets of Initial keys derived per flow (original DCID, a Retry's DCID, a new version).
pub const MAX_KEY_CONTEXTS: usize = 4;

/// Most Initial packets that fail authentication before the flow is refused.
pub const MAX_UNDECRYPTABLE: usize = 8;

/// Most bytes of Initial packets examined per flow. A ClientHello with a post-quantum key
/// share fills two 1200-byte Initials; this leaves room for retransmissions and a Retry.
pub const MAX_INITIAL_BYTES: usize = 64 * 1024;

/// The outcome of feeding a datagram to an [`InitialCollector`].
// The inline variant is large (a 253-byte name) by design: no result allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuicParse<'a> {
    /// The whole ClientHello has arrived and parsed.
    Complete(ClientHelloInfo<'a>),
    /// A valid beginning: more Initials are needed.
    Incomplete,
    /// The flow's first datagram is not a QUIC long-header packet: the policy decides by address.
    NotQuic,
    /// A QUIC long header of a version whose Initials cannot be read (drafts, Google QUIC,
    /// greased versions) and nothing readable yet.
    UnsupportedVersion(u32),
    /// QUIC that breaks the rules or the bounds: fail closed.
    Malformed(QuicError),
}

/// Why a flow's Initials are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    /// A long header cut short.
    #[error("long header truncated")]
    Truncated,
    /// A connection ID longer than 20 bytes in v1 or v2.
    #[error("connection id of {0} bytes")]
    ConnectionIdTooLong(usize),
    /// A packet's Length field runs past the end of the datagram.
    #[error("packet length exceeds the datagram")]
    LengthExceedsDatagram,
    /// An Initial too short for header protection's sample or the AEAD tag.
    #[error("packet too short to be protected")]
    PacketTooShort,
    /// A Version Negotiation packet (version 0) sent by the client.
    #[error("version negotiation packet from the client")]
    VersionNegotiationFromClient,
    /// A frame cut short by the end of the payload.
    #[error("frame truncated")]
    FrameTruncated,
    /// A frame type not allowed in Initial packets.
    #[error("frame type {0:#x} in an Initial packet")]
    UnexpectedFrame(u64),
    /// CRYPTO data past the largest stream offset (2^62).
    #[error("CRYPTO offset out of range")]
    CryptoOffsetTooLarge,
    /// Two CRYPTO frames disagree about the same stream bytes.
    #[error("overlapping CRYPTO data differs")]
    InconsistentCrypto,
    /// More than [`frames::MAX_CRYPTO_FRAMES`] CRYPTO frames.
    #[error("too many CRYPTO frames")]
    TooManyCryptoFrames,
    /// More than [`frames::MAX_RANGES`] separate pieces of the stream.
    #[error("CRYPTO stream too fragmented")]
    TooFragmented,
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message has type {0}, not ClientHello")]
    NotClientHello(u8),
    /// The ClientHello is larger than the TLS parser's limit.
    #[error("ClientHello of {0} bytes exceeds the limit")]
    HelloTooLarge(usize),
    /// The ClientHello is not valid TLS.
    #[error("invalid ClientHello: {0}")]
    Tls(TlsError),
    /// More than [`MAX_KEY_CONTEXTS`] connection IDs or versions.
    #[error("too many connection ids")]
    TooManyConnectionIds,
    /// More than [`MAX_UNDECRYPTABLE`] Initials failed authentication.
    #[error("too many Initial packets fail authentication")]
    TooManyUndecryptable,
    /// More than [`MAX_INITIAL_BYTES`] of Initial packets.
    #[error("too many bytes of Initial packets")]
    TooMuchData,
}

/// Keys derived from one (version, DCID).
#[derive(Debug)]
struct KeyContext {
    version: Version,
    dcid: [u8; MAX_CID_LEN],
    dcid_len: u8,
    keys: InitialKeys,
    largest_pn: Option<u64>,
}

impl KeyContext {
    fn dcid(&self) -> &[u8] {
        &self.dcid[..usize::from(self.dcid_len)]
    }
}

/// Collects the client Initials of one flow until the ClientHello is whole. See the module docs.
#[derive(Debug, Default)]
pub struct InitialCollector {
    stream: Option<CryptoStream>,
    contexts: Vec<KeyContext>,
    version: Option<Version>,
    abandoned: Option<Version>,
    /// The first key context of the current attempt: packets opened by earlier ones are ignored.
    attempt: usize,
    undecryptable: usize,
    bytes: usize,
    initials: usize,
    failed: Option<QuicError>,
    scratch: Vec<u8>,
}

impl InitialCollector {
    /// A collector for a new flow (allocates nothing until the first Initial).
    pub fn new() -> InitialCollector {
        InitialCollector::default()
    }

    /// Frees what only an incomplete ClientHello needs: the CRYPTO buffer shrinks to the hello
    /// received (from 16 KiB to its size) and the decryption scratch is released. A permitted
    /// flow keeps its collector settled, so that later Initials are still checked against the
    /// hello it was decided on, at a fraction of the memory.
    pub fn settle(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            s.settle();
        }
        self.scratch = Vec::new();
    }

    /// Bytes of buffers the collector holds (the CRYPTO buffer and the decryption scratch).
    pub fn footprint(&self) -> usize {
        self.stream.as_ref().map_or(0, CryptoStream::footprint) + self.scratch.capacity()
    }

    /// Initial packets decrypted so far.
    pub fn initials(&self) -> usize {
        self.initials
    }

    /// CRYPTO frames received so far.
    pub fn crypto_frames(&self) -> usize {
        self.stream.as_ref().map_or(0, CryptoStream::frames)
    }

    /// The version being read, once an Initial has been seen.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Feeds one client datagram (the UDP payload) and answers for the flow so far.
    pub fn push(&mut self, datagram: &[u8]) -> QuicParse<'_> {
        if let Some(e) = self.failed {
            return QuicParse::Malformed(e);
        }
        match self.absorb(datagram) {
            Err(e) => {
                self.failed = Some(e);
                return QuicParse::Malformed(e);
            }
            Ok(Some(early)) => return early,
            Ok(None) => {}
        }
        self.result()
    }

    /// Reads every packet of the datagram. `Some` for an answer that does not depend on the
    /// CRYPTO stream (not QUIC, an unreadable version).
    fn absorb(&mut self, datagram: &[u8]) -> Result<Option<QuicParse<'static>>, QuicError> {
        let mut rest = datagram;
        let mut first = true;
        while !rest.is_empty() {
            let hdr = match parse_packet(rest) {
                Ok(Packet::Long(h)) => h,
                Ok(Packet::Short) if first && self.version.is_none() => {
                    return Ok(Some(QuicParse::NotQuic));
                }
                // A short-header packet runs to the end of the datagram.
                Ok(Packet::Short) => break,
                Err(e) if first => return Err(e),
                // Bytes after a coalesced packet that are not a packet: the server ignores
                // them too (RFC 9000 12.2).
                Err(_) => break,
            };
            let (packet, tail) = rest.split_at(hdr.len.min(rest.len()));
            rest = tail;
            first = false;
            match hdr.ty {
                None if self.version.is_none() => {
                    return Ok(Some(QuicParse::UnsupportedVersion(hdr.version.to_wire())));
                }
                Some(LongType::Initial) => self.initial(&hdr, packet)?,
                // Later packets of an unreadable version, 0-RTT, Handshake: not inspected.
                _ => {}
            }
        }
        Ok(None)
    }

    /// Reads one Initial packet into the CRYPTO stream.
    fn initial(&mut self, hdr: &LongHeader<'_>, packet: &[u8]) -> Result<(), QuicError> {
        self.bytes += packet.len();
        if self.bytes > MAX_INITIAL_BYTES {
            return Err(QuicError::TooMuchData);
        }
        match self.version {
            None => self.version = Some(hdr.version),
            Some(cur) if cur == hdr.version => {}
            // A late packet of the attempt given up after Version Negotiation. With two
            // readable versions, nothing else can differ once one change has happened.
            Some(_) if self.abandoned.is_some() => return Ok(()),
            Some(cur) => {
                self.abandoned = Some(cur);
                self.version = Some(hdr.version);
                if let Some(s) = self.stream.as_mut() {
                    s.reset();
                }
            }
        }
        let known = self.contexts.len();
        let Some((pn, range, ctx)) = self.open(hdr, packet)? else {
            self.undecryptable += 1;
            if self.undecryptable > MAX_UNDECRYPTABLE {
                return Err(QuicError::TooManyUndecryptable);
            }
            return Ok(());
        };
        if ctx < self.attempt {
            // A late packet of an attempt given up for a newer one (below).
            return Ok(());
        }
        let largest = &mut self.contexts[ctx].largest_pn;
        *largest = Some(largest.map_or(pn, |l| l.max(pn)));
        self.initials += 1;
        let stream = self.stream.get_or_insert_with(CryptoStream::new);
        // Keys derived for a new DCID once the ClientHello was whole: the client started over
        // (a new connection on the same ports, or the same hello again after a Retry). The
        // server takes it as a new connection, so its hello is read afresh, and packets of the
        // earlier attempt are ignored from then on. Before the hello is whole, a new DCID feeds
        // the same stream, so two hellos cannot be mixed into one unnoticed.
        if ctx >= known && ctx > 0 && matches!(stream.hello(), Ok(Some(_))) {
            self.attempt = ctx;
            stream.reset();
        }
        walk_frames(&self.scratch[range], stream)
    }

    /// Decrypts an Initial into the scratch buffer: under the keys of its DCID if known, else
    /// the latest keys of its version (a DCID the server chose), else keys derived from its
    /// DCID (after a Retry, or a first packet). Returns the packet number, the plaintext's range
    /// in the scratch buffer and the index of the keys that opened it.
    fn open(
        &mut self,
        hdr: &LongHeader<'_>,
        packet: &[u8],
    ) -> Result<Option<(u64, std::ops::Range<usize>, usize)>, QuicError> {
        let own = self
            .contexts
            .iter()
            .position(|c| c.version == hdr.version && c.dcid() == hdr.dcid);
        if let Some(i) = own {
            return self.try_keys(i, hdr, packet);
        }
        let latest = self.contexts.iter().rposition(|c| c.version == hdr.version);
        if let Some(i) = latest {
            if let Some(found) = self.try_keys(i, hdr, packet)? {
                return Ok(Some(found));
            }
        }
        if self.contexts.len() >= MAX_KEY_CONTEXTS {
            return Err(QuicError::TooManyConnectionIds);
        }
        // Initials are only recognised in v1 and v2, which both have keys: `None` cannot
        // happen, and is refused rather than assumed away.
        let keys =
            InitialKeys::client(hdr.version, hdr.dcid).ok_or(QuicError::TooManyConnectionIds)?;
        let mut dcid = [0u8; MAX_CID_LEN];
        let n = hdr.dcid.len().min(MAX_CID_LEN);
        dcid[..n].copy_from_slice(&hdr.dcid[..n]);
        if self.contexts.capacity() == 0 {
            self.contexts.reserve_exact(MAX_KEY_CONTEXTS);
        }
        self.contexts.push(KeyContext {
            version: hdr.version,
            dcid,
            dcid_len: n as u8,
            keys,
            largest_pn: None,
        });
        self.try_keys(self.contexts.len() - 1, hdr, packet)
    }

    fn try_keys(
        &mut self,
        i: usize,
        hdr: &LongHeader<'_>,
        packet: &[u8],
    ) -> Result<Option<(u64, std::ops::Range<usize>, usize)>, QuicError> {
        let ctx = &self.contexts[i];
        let opened = open_initial(
            &ctx.keys,
            packet,
            hdr.pn_offset,
            ctx.largest_pn,
            &mut self.scratch,
        )?;
        Ok(opened.map(|(pn, range)| (pn, range, i)))
    }

    /// The answer for the stream as it stands.
    fn result(&mut self) -> QuicParse<'_> {
        let Some(stream) = self.stream.as_mut() else {
            return QuicParse::Incomplete;
        };
        match stream.hello() {
            Err(e) => QuicParse::Malformed(e),
            Ok(None) => QuicParse::Incomplete,
            Ok(Some(record)) => match parse_client_hello(record) {
                TlsParse::Complete(info) => QuicParse::Complete(info),
                TlsParse::Malformed(e) => QuicParse::Malformed(QuicError::Tls(e)),
                // The record holds the whole message and starts with type 22: neither can
                // happen, and neither may pass.
                TlsParse::Incomplete { .. } | TlsParse::NotTls => {
                    QuicParse::Malformed(QuicError::NotClientHello(0))
                }
            },
        }
    }
}
