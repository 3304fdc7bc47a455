//! The server name of a TLS ClientHello, read without decrypting or allocating.
//!
//! [`parse_client_hello`] takes the client's byte stream from its first byte: one or more TLS
//! records (RFC 8446 5.1) that carry the ClientHello handshake message (RFC 8446 4.1.2),
//! fragmented across records in any way down to 1-byte records. When the whole message is in the
//! first record (the usual case) it is parsed in place and the name borrows from the input; when it
//! spans several records its fragments are gathered into a fixed stack buffer of
//! [`MAX_HELLO_LEN`] bytes first and the name is copied out inline. Either way the result is the
//! same, whatever the fragmentation.
//!
//! Every length-prefixed field is read through a bounded sub-reader that checks lengths before
//! slicing; the parser never panics and never guesses: a prefix of a valid stream is
//! [`TlsParse::Incomplete`], a stream that does not start with a handshake record is
//! [`TlsParse::NotTls`], and anything inconsistent is [`TlsParse::Malformed`], which the pipeline
//! treats as a deny.
//!
//! Decisions worth knowing:
//! - A stream whose first byte is not 22 (handshake) is [`TlsParse::NotTls`]; that includes the
//!   SSLv2-compatible ClientHello (first byte with the high bit set), which cannot carry
//!   extensions and so never has a server name. Once the first byte is 22 the stream is held to TLS
//!   rules: a bad record version, an empty or oversized record, another content type before the
//!   hello is complete, or a first handshake message that is not a ClientHello is malformed.
//! - `server_name` (RFC 6066 3): the extension must hold a non-empty list; the one `host_name`
//!   (type 0) entry is the name; entries of other types are skipped; a second `host_name` entry, a
//!   second `server_name` extension, an empty extension, a list without a `host_name`, or a name
//!   that is not a valid host name (see [`super::validate_host_name`]; IP literals are forbidden
//!   by RFC 6066) is malformed. No `server_name` extension at all is a complete hello without a
//!   name.
//! - `encrypted_client_hello` (0xfe0d) present sets [`ClientHelloInfo::ech`]: the name is then
//!   the outer, public name, and the real destination is hidden in the encrypted inner hello.
//! - Other extensions are skipped by length, without looking inside.

use super::{borrowable_host_name, validate_host_name, HostName, HostNameError};

/// Largest ClientHello handshake message accepted, header included. Real hellos are under 2 KiB
/// (about 1.9 KiB with a post-quantum key share); the pipeline holds at most 16 KiB per flow.
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// Largest TLS plaintext record fragment (RFC 8446 5.1).
pub const MAX_RECORD_LEN: usize = 1 << 14;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_ECH: u16 = 0xfe0d;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;

/// The outcome of [`parse_client_hello`].
// The inline variant is large (a 253-byte name) by design: no result allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsParse<'a> {
    /// A whole ClientHello.
    Complete(ClientHelloInfo<'a>),
    /// A valid prefix: more bytes are needed. `needed_hint` is a lower bound of the total stream
    /// length needed, when known.
    Incomplete {
        /// Lower bound of the stream length that could complete the hello.
        needed_hint: Option<usize>,
    },
    /// Not a TLS handshake (first byte is not 22).
    NotTls,
    /// TLS, but not a valid ClientHello: fail closed.
    Malformed(TlsError),
}

/// What the gateway learns from a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHelloInfo<'a> {
    /// The server name (normalised), or `None` without a `server_name` extension.
    pub sni: Option<HostName<'a>>,
    /// An `encrypted_client_hello` extension is present: `sni` is the outer (public) name.
    pub ech: bool,
    /// `legacy_version` of the ClientHello (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// Version field of the first record header.
    pub record_version: u16,
    /// Highest version in `supported_versions` (GREASE values ignored), if the extension is
    /// present and well formed.
    pub max_supported_version: Option<u16>,
    /// Length of the handshake message, its 4-byte header included.
    pub hello_len: usize,
    /// Number of TLS records the message spanned.
    pub records: usize,
    /// Stream bytes up to the end of the record that completed the hello.
    pub consumed: usize,
}

/// A field of the ClientHello, for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `legacy_version`.
    Version,
    /// `random`.
    Random,
    /// `legacy_session_id`.
    SessionId,
    /// `cipher_suites`.
    CipherSuites,
    /// `legacy_compression_methods`.
    CompressionMethods,
    /// The extensions block.
    Extensions,
    /// One extension header or body.
    Extension,
    /// The `server_name` list.
    ServerNameList,
    /// One `server_name` entry.
    ServerName,
}

/// Why a TLS stream is not a valid ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// Record version major byte is not 3.
    #[error("record version {0:#06x} is not TLS")]
    RecordVersion(u16),
    /// A zero-length handshake record (forbidden by RFC 8446 5.1).
    #[error("empty handshake record")]
    EmptyRecord,
    /// A record longer than 2^14 bytes.
    #[error("record of {0} bytes exceeds 2^14")]
    RecordTooLong(usize),
    /// A record of another content type before the hello was complete.
    #[error("content type {0} interleaved with the ClientHello")]
    InterleavedContentType(u8),
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message has type {0}, not ClientHello")]
    NotClientHello(u8),
    /// The hello is larger than [`MAX_HELLO_LEN`].
    #[error("ClientHello of {0} bytes exceeds the limit")]
    HelloTooLarge(usize),
    /// A field is cut short by its enclosing length.
    #[error("{0:?} truncated")]
    Truncated(Field),
    /// Bytes left over after a field that must fill its enclosing length.
    #[error("trailing bytes after {0:?}")]
    Trailing(Field),
    /// Session id longer than 32 bytes.
    #[error("session id of {0} bytes")]
    SessionIdTooLong(usize),
    /// Cipher suite list empty or of odd length.
    #[error("invalid cipher suite list")]
    BadCipherSuites,
    /// No compression method offered.
    #[error("no compression method")]
    NoCompressionMethods,
    /// Two `server_name` extensions.
    #[error("server_name extension repeated")]
    DuplicateServerNameExtension,
    /// Two `host_name` entries in the `server_name` list.
    #[error("several host names in server_name")]
    DuplicateHostName,
    /// An empty `server_name` extension or list.
    #[error("empty server_name extension")]
    EmptyServerName,
    /// A `server_name` list without a `host_name` entry.
    #[error("server_name without a host_name entry")]
    NoHostName,
    /// The name is not a valid host name.
    #[error("invalid server name: {0}")]
    InvalidHostName(HostNameError),
}

/// A bounded reader: every read checks the remaining length first.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize, f: Field) -> Result<&'a [u8], TlsError> {
        if self.0.len() < n {
            return Err(TlsError::Truncated(f));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    #[inline]
    fn u8(&mut self, f: Field) -> Result<u8, TlsError> {
        let (&b, rest) = self.0.split_first().ok_or(TlsError::Truncated(f))?;
        self.0 = rest;
        Ok(b)
    }

    #[inline]
    fn u16(&mut self, f: Field) -> Result<u16, TlsError> {
        match *self.0 {
            [a, b, ref rest @ ..] => {
                self.0 = rest;
                Ok(u16::from_be_bytes([a, b]))
            }
            _ => Err(TlsError::Truncated(f)),
        }
    }

    /// A sub-reader over a field with a 1-byte length prefix.
    #[inline]
    fn prefixed8(&mut self, f: Field) -> Result<Reader<'a>, TlsError> {
        let n = self.u8(f)?;
        Ok(Reader(self.take(usize::from(n), f)?))
    }

    /// A sub-reader over a field with a 2-byte length prefix.
    #[inline]
    fn prefixed16(&mut self, f: Field) -> Result<Reader<'a>, TlsError> {
        let n = self.u16(f)?;
        Ok(Reader(self.take(usize::from(n), f)?))
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Parses the ClientHello at the start of `stream`. See the module docs.
pub fn parse_client_hello(stream: &[u8]) -> TlsParse<'_> {
    match stream {
        [] => return TlsParse::Incomplete { needed_hint: None },
        [ct, ..] if *ct != CONTENT_HANDSHAKE => return TlsParse::NotTls,
        _ => {}
    }
    // Fast path: the whole hello in the first record, parsed in place.
    if let [_, vmaj, vmin, l0, l1, rest @ ..] = stream {
        let rec_len = usize::from(u16::from_be_bytes([*l0, *l1]));
        if let Err(e) = check_record_header(*vmaj, *vmin, rec_len) {
            return TlsParse::Malformed(e);
        }
        let Some(record) = rest.get(..rec_len) else {
            // The first record is not all there: nothing in it is looked at before it is (the
            // general path answers the same, after zeroing its 16 KiB buffer).
            return TlsParse::Incomplete {
                needed_hint: Some(RECORD_HEADER_LEN + rec_len),
            };
        };
        if let [ht, a, b, c, body @ ..] = record {
            if *ht != HANDSHAKE_CLIENT_HELLO {
                return TlsParse::Malformed(TlsError::NotClientHello(*ht));
            }
            let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
            if len + HANDSHAKE_HEADER_LEN > MAX_HELLO_LEN {
                return TlsParse::Malformed(TlsError::HelloTooLarge(len + 4));
            }
            if let Some(body) = body.get(..len) {
                let meta = Meta {
                    record_version: u16::from_be_bytes([*vmaj, *vmin]),
                    hello_len: len + HANDSHAKE_HEADER_LEN,
                    records: 1,
                    consumed: RECORD_HEADER_LEN + rec_len,
                };
                return match parse_body::<false>(body) {
                    Ok(b) => complete(b, meta),
                    Err(e) => TlsParse::Malformed(e),
                };
            }
        }
    }
    parse_fragmented(stream)
}

/// A validated server name, as found in the hello.
#[derive(Clone, Copy)]
enum Name<'a> {
    /// Already normalised: borrowed as it is.
    Borrowed(&'a str),
    /// Valid, but it must be copied (upper case to fold, or the bytes are in a scratch buffer).
    Fold(&'a [u8]),
    /// Not a host name (only from the lenient parse of [`unusable_server_name`]).
    Invalid(&'a [u8], HostNameError),
}

/// What [`parse_body`] finds; small, so that it is cheap to return.
#[derive(Clone, Copy)]
struct Body<'a> {
    sni: Option<Name<'a>>,
    ech: bool,
    legacy_version: u16,
    max_supported_version: Option<u16>,
}

/// The answer for a hello parsed in place. Only `None` and borrowed names are built here, so the
/// result is written field by field without touching the inline name buffer; a name that needs
/// a copy takes the out-of-line path.
#[inline]
fn complete(b: Body<'_>, meta: Meta) -> TlsParse<'_> {
    let sni = match b.sni {
        None => None,
        Some(Name::Borrowed(s)) => Some(HostName::Borrowed(s)),
        Some(Name::Fold(raw)) => return complete_folded(raw, b, meta),
        Some(Name::Invalid(_, e)) => return TlsParse::Malformed(TlsError::InvalidHostName(e)),
    };
    TlsParse::Complete(ClientHelloInfo {
        sni,
        ech: b.ech,
        legacy_version: b.legacy_version,
        record_version: meta.record_version,
        max_supported_version: b.max_supported_version,
        hello_len: meta.hello_len,
        records: meta.records,
        consumed: meta.consumed,
    })
}

/// [`complete`] for a name that must be copied (lower-cased, or gathered from several records).
#[cold]
#[inline(never)]
fn complete_folded(raw: &[u8], b: Body<'_>, meta: Meta) -> TlsParse<'static> {
    TlsParse::Complete(ClientHelloInfo {
        sni: Some(owned_name(raw)),
        ech: b.ech,
        legacy_version: b.legacy_version,
        record_version: meta.record_version,
        max_supported_version: b.max_supported_version,
        hello_len: meta.hello_len,
        records: meta.records,
        consumed: meta.consumed,
    })
}

/// The inline copy of a name [`parse_body`] validated.
#[cold]
fn owned_name(raw: &[u8]) -> HostName<'static> {
    match validate_host_name(raw) {
        Ok(n) => n.detach(),
        // Validated already; an empty name here would be a bug, never a panic.
        Err(_) => HostName::Inline(super::InlineName::copy_lower(b"")),
    }
}

/// Record facts carried into the result.
#[derive(Clone, Copy)]
struct Meta {
    record_version: u16,
    hello_len: usize,
    records: usize,
    consumed: usize,
}

fn check_record_header(vmaj: u8, vmin: u8, len: usize) -> Result<(), TlsError> {
    if vmaj != 3 {
        return Err(TlsError::RecordVersion(u16::from_be_bytes([vmaj, vmin])));
    }
    if len == 0 {
        return Err(TlsError::EmptyRecord);
    }
    if len > MAX_RECORD_LEN {
        return Err(TlsError::RecordTooLong(len));
    }
    Ok(())
}

/// The general path: gathers the handshake message from as many records as it spans. Kept out of
/// line so that its 16 KiB scratch buffer does not enlarge the fast path's stack frame.
#[inline(never)]
fn parse_fragmented(stream: &[u8]) -> TlsParse<'_> {
    let mut scratch = [0u8; MAX_HELLO_LEN];
    let mut have = 0usize;
    let mut need: Option<usize> = None;
    let mut pos = 0usize;
    let mut records = 0usize;
    let mut record_version = 0u16;
    loop {
        if let Some(n) = need {
            if have >= n {
                break;
            }
        }
        let missing = need.map_or(1, |n| n - have);
        let Some(hdr) = stream.get(pos..pos + RECORD_HEADER_LEN) else {
            // A byte-wise check of what is there keeps every prefix of a malformed header from
            // being reported as merely incomplete.
            if let Some(&ct) = stream.get(pos) {
                if ct != CONTENT_HANDSHAKE {
                    return TlsParse::Malformed(TlsError::InterleavedContentType(ct));
                }
            }
            if let Some(&vmaj) = stream.get(pos + 1) {
                if vmaj != 3 {
                    return TlsParse::Malformed(TlsError::RecordVersion(u16::from(vmaj) << 8));
                }
            }
            return TlsParse::Incomplete {
                needed_hint: Some(pos + RECORD_HEADER_LEN + missing),
            };
        };
        if hdr[0] != CONTENT_HANDSHAKE {
            // The first record was checked by the caller.
            return TlsParse::Malformed(TlsError::InterleavedContentType(hdr[0]));
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if let Err(e) = check_record_header(hdr[1], hdr[2], len) {
            return TlsParse::Malformed(e);
        }
        if records == 0 {
            record_version = u16::from_be_bytes([hdr[1], hdr[2]]);
        }
        let start = pos + RECORD_HEADER_LEN;
        let Some(fragment) = stream.get(start..start + len) else {
            return TlsParse::Incomplete {
                needed_hint: Some(start + len.max(missing)),
            };
        };
        let limit = need.unwrap_or(MAX_HELLO_LEN);
        let take = fragment.len().min(limit.saturating_sub(have));
        scratch[have..have + take].copy_from_slice(&fragment[..take]);
        have += take;
        pos = start + len;
        records += 1;
        if have >= 1 && scratch[0] != HANDSHAKE_CLIENT_HELLO {
            return TlsParse::Malformed(TlsError::NotClientHello(scratch[0]));
        }
        if need.is_none() && have >= HANDSHAKE_HEADER_LEN {
            let len = usize::from(scratch[1]) << 16
                | usize::from(scratch[2]) << 8
                | usize::from(scratch[3]);
            let total = len + HANDSHAKE_HEADER_LEN;
            if total > MAX_HELLO_LEN {
                return TlsParse::Malformed(TlsError::HelloTooLarge(total));
            }
            need = Some(total);
            // Bytes past the message in this record (a following handshake message) are not
            // part of the hello.
            have = have.min(total);
        }
    }
    let total = need.unwrap_or(0);
    let meta = Meta {
        record_version,
        hello_len: total,
        records,
        consumed: pos,
    };
    match parse_body::<false>(&scratch[HANDSHAKE_HEADER_LEN..total]) {
        // The name is in the scratch buffer: always copied.
        Ok(b) => match b.sni {
            None => TlsParse::Complete(ClientHelloInfo {
                sni: None,
                ech: b.ech,
                legacy_version: b.legacy_version,
                record_version: meta.record_version,
                max_supported_version: b.max_supported_version,
                hello_len: meta.hello_len,
                records: meta.records,
                consumed: meta.consumed,
            }),
            Some(Name::Borrowed(s)) => complete_folded(s.as_bytes(), b, meta),
            Some(Name::Fold(raw)) => complete_folded(raw, b, meta),
            Some(Name::Invalid(_, e)) => TlsParse::Malformed(TlsError::InvalidHostName(e)),
        },
        Err(e) => TlsParse::Malformed(e),
    }
}

/// Parses the ClientHello body (after the 4-byte handshake header), which is exactly `body`.
fn parse_body<const LENIENT: bool>(body: &[u8]) -> Result<Body<'_>, TlsError> {
    let mut r = Reader(body);
    let legacy_version = r.u16(Field::Version)?;
    r.take(32, Field::Random)?;
    let sid = r.prefixed8(Field::SessionId)?;
    if sid.len() > 32 {
        return Err(TlsError::SessionIdTooLong(sid.len()));
    }
    let suites = r.prefixed16(Field::CipherSuites)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(TlsError::BadCipherSuites);
    }
    if r.prefixed8(Field::CompressionMethods)?.is_empty() {
        return Err(TlsError::NoCompressionMethods);
    }
    let mut info = Body {
        sni: None,
        ech: false,
        legacy_version,
        max_supported_version: None,
    };
    if r.is_empty() {
        // A hello without extensions (TLS 1.2 and older).
        return Ok(info);
    }
    let exts = r.prefixed16(Field::Extensions)?.0;
    if !r.is_empty() {
        return Err(TlsError::Trailing(Field::Extensions));
    }
    // Each extension is a type, a length and that many bytes; only three types are looked
    // inside. One length check per extension covers its 4-byte header and its body.
    let mut seen_sni = false;
    let mut rest = exts;
    while let [t0, t1, l0, l1, tail @ ..] = rest {
        // Type and length in one 4-byte read: the next header's position depends on this
        // length, so the walk is a chain of dependent loads and each step is kept short.
        let header = u32::from_be_bytes([*t0, *t1, *l0, *l1]);
        let len = (header & 0xffff) as usize;
        let Some(data) = tail.get(..len) else {
            return Err(TlsError::Truncated(Field::Extension));
        };
        rest = &tail[len..];
        match (header >> 16) as u16 {
            EXT_SERVER_NAME => {
                if seen_sni {
                    return Err(TlsError::DuplicateServerNameExtension);
                }
                seen_sni = true;
                let raw = server_name(data)?;
                info.sni = Some(match borrowable_host_name(raw) {
                    Some(s) => Name::Borrowed(s),
                    // Upper case to fold, or invalid: the full validator says which.
                    None => match validate_host_name(raw) {
                        Ok(_) => Name::Fold(raw),
                        Err(e) if LENIENT => Name::Invalid(raw, e),
                        Err(e) => return Err(TlsError::InvalidHostName(e)),
                    },
                });
            }
            EXT_ECH => info.ech = true,
            EXT_SUPPORTED_VERSIONS => info.max_supported_version = supported_versions(data),
            _ => {}
        }
    }
    if !rest.is_empty() {
        // 1 to 3 bytes: an extension header cut short.
        return Err(TlsError::Truncated(Field::Extension));
    }
    Ok(info)
}

/// The longest server name kept of one that is not a host name: RFC 6066 allows 2^16 - 1 bytes,
/// a DNS name has at most 253; what is kept goes into a log record.
pub const MAX_UNUSABLE_NAME_LEN: usize = 255;

/// What a ClientHello sent as its server name when that is not a host name (an IP literal, which
/// RFC 6066 forbids but clients send, or bytes no name may hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableName {
    /// The `host_name` bytes as sent, cut to [`MAX_UNUSABLE_NAME_LEN`].
    pub raw: Vec<u8>,
    /// `raw` was cut.
    pub cut: bool,
    /// An `encrypted_client_hello` extension is present.
    pub ech: bool,
    /// Stream bytes up to the end of the record that completed the hello.
    pub consumed: usize,
}

/// For a stream on which [`parse_client_hello`] answered
/// `Malformed(TlsError::InvalidHostName(_))`: the server name the hello carries, which is not a
/// host name, so that it can be recorded as sent. `None` when the hello is malformed otherwise.
///
/// Off the hot path: it gathers the hello into a bounded buffer of its own and parses it again
/// with the same rules, except that the name is not required to be a host name.
pub fn unusable_server_name(stream: &[u8]) -> Option<UnusableName> {
    let mut hello: Vec<u8> = Vec::new();
    let mut need: Option<usize> = None;
    let mut pos = 0usize;
    while need.is_none_or(|n| hello.len() < n) {
        let hdr = stream.get(pos..pos + RECORD_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if hdr[0] != CONTENT_HANDSHAKE || check_record_header(hdr[1], hdr[2], len).is_err() {
            return None;
        }
        let fragment = stream.get(pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len)?;
        let room = need.unwrap_or(MAX_HELLO_LEN).saturating_sub(hello.len());
        hello.extend_from_slice(&fragment[..fragment.len().min(room)]);
        pos += RECORD_HEADER_LEN + len;
        if need.is_none() && hello.len() >= HANDSHAKE_HEADER_LEN {
            if hello[0] != HANDSHAKE_CLIENT_HELLO {
                return None;
            }
            let total =
                (usize::from(hello[1]) << 16 | usize::from(hello[2]) << 8 | usize::from(hello[3]))
                    + HANDSHAKE_HEADER_LEN;
            if total > MAX_HELLO_LEN {
                return None;
            }
            hello.truncate(total);
            need = Some(total);
        }
    }
    let body = parse_body::<true>(hello.get(HANDSHAKE_HEADER_LEN..)?).ok()?;
    match body.sni {
        Some(Name::Invalid(raw, _)) => Some(UnusableName {
            raw: raw[..raw.len().min(MAX_UNUSABLE_NAME_LEN)].to_vec(),
            cut: raw.len() > MAX_UNUSABLE_NAME_LEN,
            ech: body.ech,
            consumed: pos,
        }),
        _ => None,
    }
}

/// The `host_name` of a `server_name` extension body (RFC 6066 3).
fn server_name(data: &[u8]) -> Result<&[u8], TlsError> {
    let [l0, l1, list @ ..] = data else {
        return Err(if data.is_empty() {
            TlsError::EmptyServerName
        } else {
            TlsError::Truncated(Field::ServerNameList)
        });
    };
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    if list.len() < len {
        return Err(TlsError::Truncated(Field::ServerNameList));
    }
    if list.len() > len {
        return Err(TlsError::Trailing(Field::ServerNameList));
    }
    if list.is_empty() {
        return Err(TlsError::EmptyServerName);
    }
    let mut host = None;
    let mut rest = list;
    while let [name_type, n0, n1, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*n0, *n1]));
        let Some(name) = tail.get(..n) else {
            return Err(TlsError::Truncated(Field::ServerName));
        };
        rest = &tail[n..];
        if *name_type == 0 {
            if host.is_some() {
                return Err(TlsError::DuplicateHostName);
            }
            host = Some(name);
        }
    }
    if !rest.is_empty() {
        return Err(TlsError::Truncated(Field::ServerName));
    }
    host.ok_or(TlsError::NoHostName)
}

/// The highest non-GREASE version offered, or `None` if the extension is malformed or lists
/// only GREASE.
fn supported_versions(data: &[u8]) -> Option<u16> {
    let (len, list) = data.split_first()?;
    if list.len() != usize::from(*len) || list.len() % 2 != 0 {
        return None;
    }
    list.chunks_exact(2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .filter(|v| v & 0x0f0f != 0x0a0a)
        .max()
}

#[cfg(test)]
mod tests;
