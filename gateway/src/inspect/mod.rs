//! The protocol parsers that find the name a client asks for, without decrypting anything.
//!
//! - [`tls`]: the server name (SNI) of a TLS ClientHello, reassembled across TLS records.
//! - [`http`]: the `Host` of a plain HTTP/1.x request, or the authority of a `CONNECT`; and
//!   ([`http::framing`]) where its body ends, so that the next request head can be found.
//! - [`quic`]: the server name of a QUIC (v1, v2) connection, from the ClientHello carried in
//!   the client's Initial packets, which are decrypted with their public keys and handed to
//!   [`tls`]. It takes datagrams rather than a stream, and allocates one buffer per flow.
//! - [`starttls`]: the client's plaintext dialogue of SMTP, IMAP and POP3 up to the command
//!   that upgrades the connection to TLS, one command line at a time.
//!
//! The first two take the client's byte stream from its first byte (the pipeline reassembles TCP segments
//! into it) and answer `Complete`, `Incomplete` (feed more bytes), `Not...` (another protocol:
//! the policy decides by address) or `Malformed` (fail closed). They never panic, never allocate
//! and read every length-prefixed field through a bounded reader. A name is only ever reported
//! from a complete message: a prefix of a valid message is always `Incomplete`.
//!
//! Names come out as a [`HostName`]: validated (LDH labels, at most 253 bytes), ASCII
//! lower-cased, with one trailing dot removed. It borrows from the input when the name on the wire
//! is already in that form and holds a fixed inline copy otherwise, so no path allocates.

pub mod http;
pub mod quic;
pub mod starttls;
pub mod tls;

use std::fmt;
use std::ops::Deref;

/// Longest host name: 253 bytes of text (RFC 1035 2.3.4: 255 bytes in wire form).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// A validated, normalised host name (ASCII lower case, no trailing dot).
// The inline variant is large (a 253-byte name) by design: no result allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
pub enum HostName<'a> {
    /// Borrowed from the input: it was already normalised there.
    Borrowed(&'a str),
    /// Copied, because it had to be lower-cased or was reassembled from several records.
    Inline(InlineName),
}

/// A host name in a fixed buffer.
#[derive(Clone, Copy)]
pub struct InlineName {
    len: u8,
    buf: [u8; MAX_HOST_NAME_LEN],
}

impl fmt::Debug for InlineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl InlineName {
    /// Copies a validated, already lower-cased name (at most 253 ASCII bytes).
    fn copy_lower(name: &[u8]) -> InlineName {
        let mut buf = [0u8; MAX_HOST_NAME_LEN];
        let len = name.len().min(MAX_HOST_NAME_LEN);
        for (d, s) in buf.iter_mut().zip(&name[..len]) {
            *d = s.to_ascii_lowercase();
        }
        // len <= 253.
        InlineName {
            len: len as u8,
            buf,
        }
    }

    fn as_str(&self) -> &str {
        // Only ever built from validated ASCII; the fallback is unreachable but not a panic.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl<'a> HostName<'a> {
    /// The name.
    pub fn as_str(&self) -> &str {
        match self {
            HostName::Borrowed(s) => s,
            HostName::Inline(n) => n.as_str(),
        }
    }

    /// A copy that does not borrow the input.
    pub fn detach(&self) -> HostName<'static> {
        HostName::Inline(InlineName::copy_lower(self.as_str().as_bytes()))
    }

    /// Whether the name is borrowed from the input (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self, HostName::Borrowed(_))
    }
}

impl Deref for HostName<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for HostName<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for HostName<'_> {}

impl PartialEq<str> for HostName<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HostName<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for HostName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HostName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a name is not a valid host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    /// Empty (or only a dot).
    #[error("empty host name")]
    Empty,
    /// Longer than 253 bytes.
    #[error("host name longer than {MAX_HOST_NAME_LEN} bytes")]
    TooLong,
    /// An empty label (`a..b`, a leading dot).
    #[error("empty label in host name")]
    EmptyLabel,
    /// A label longer than 63 bytes.
    #[error("label longer than 63 bytes in host name")]
    LabelTooLong,
    /// A byte other than a letter, digit, `-` or `_` (a U-label must arrive as punycode).
    #[error("invalid byte {0:#04x} in host name")]
    InvalidByte(u8),
    /// A label that starts or ends with `-`.
    #[error("label starts or ends with a hyphen")]
    HyphenAtLabelEdge,
    /// The last label is all digits: an IPv4 literal or not a host name (RFC 3696 2).
    #[error("numeric top-level label: an address literal, not a host name")]
    NumericTld,
}

/// Byte classes for [`borrowable_host_name`].
const C_INVALID: u8 = 1;
const C_UPPER: u8 = 2;
const C_DIGIT: u8 = 4;
const C_DOT: u8 = 8;

/// The class of every byte in a host name: letters, digits, `-`, `_` and `.` are valid; upper
/// case letters, digits and the dot are marked.
static NAME_BYTE: [u8; 256] = {
    let mut t = [C_INVALID; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_lowercase() || c == b'-' || c == b'_' {
            t[b] = 0;
        } else if c.is_ascii_uppercase() {
            t[b] = C_UPPER;
        } else if c.is_ascii_digit() {
            t[b] = C_DIGIT;
        } else if c == b'.' {
            t[b] = C_DOT;
        }
        b += 1;
    }
    t
};

/// The common case of [`validate_host_name`], without error details: `Some` exactly when the
/// name is valid and already normalised (no upper case), so that it can be borrowed. Anything
/// else (upper case, or an invalid name) is `None`, and the caller asks [`validate_host_name`],
/// which reports the first error in the name or makes the lower-cased copy.
///
/// One table lookup per byte; the label rules (length, hyphens at the edges, a numeric last
/// label) are checked at each dot rather than carried byte by byte.
#[inline]
pub fn borrowable_host_name(raw: &[u8]) -> Option<&str> {
    let name = match raw.split_last() {
        Some((b'.', rest)) => rest,
        _ => raw,
    };
    if name.is_empty() || name.len() > MAX_HOST_NAME_LEN {
        return None;
    }
    // Classes seen in the whole name, and in the current label whether every byte is a digit.
    let mut any = 0u8;
    let mut digits = C_DIGIT;
    let mut start = 0usize;
    for (i, &b) in name.iter().enumerate() {
        let c = NAME_BYTE[usize::from(b)];
        if c == C_DOT {
            if !label_ok(&name[start..i]) {
                return None;
            }
            start = i + 1;
            digits = C_DIGIT;
        } else {
            any |= c;
            digits &= c;
        }
    }
    if any & (C_INVALID | C_UPPER) != 0 || digits != 0 || !label_ok(&name[start..]) {
        return None;
    }
    // Every byte is ASCII: this cannot fail.
    std::str::from_utf8(name).ok()
}

/// Length and edges of one label of [`borrowable_host_name`].
#[inline]
fn label_ok(label: &[u8]) -> bool {
    match label {
        [] | [b'-', ..] | [.., b'-'] => false,
        _ => label.len() <= 63,
    }
}

/// Validates and normalises a host name: letters, digits, `-` and `_` (seen in real names,
/// accepted by browsers) in dot-separated labels of 1 to 63 bytes, at most 253 bytes, the last
/// label not all digits. One trailing dot is dropped; upper case is folded (making an inline
/// copy).
pub fn validate_host_name(raw: &[u8]) -> Result<HostName<'_>, HostNameError> {
    let name = match raw.split_last() {
        Some((b'.', rest)) => rest,
        _ => raw,
    };
    if name.is_empty() {
        return Err(HostNameError::Empty);
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err(HostNameError::TooLong);
    }
    let mut upper = false;
    let mut label_len = 0usize;
    let mut label_digits = true;
    let mut prev = b'.';
    for &b in name {
        match b {
            b'.' => {
                if label_len == 0 {
                    return Err(HostNameError::EmptyLabel);
                }
                if prev == b'-' {
                    return Err(HostNameError::HyphenAtLabelEdge);
                }
                label_len = 0;
                label_digits = true;
            }
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'A'..=b'Z' => {
                if b == b'-' && label_len == 0 {
                    return Err(HostNameError::HyphenAtLabelEdge);
                }
                upper |= b.is_ascii_uppercase();
                label_digits &= b.is_ascii_digit();
                label_len += 1;
                if label_len > 63 {
                    return Err(HostNameError::LabelTooLong);
                }
            }
            other => return Err(HostNameError::InvalidByte(other)),
        }
        prev = b;
    }
    if label_len == 0 {
        return Err(HostNameError::EmptyLabel);
    }
    if prev == b'-' {
        return Err(HostNameError::HyphenAtLabelEdge);
    }
    if label_digits {
        return Err(HostNameError::NumericTld);
    }
    if upper {
        Ok(HostName::Inline(InlineName::copy_lower(name)))
    } else {
        // Every byte was checked to be ASCII above.
        match std::str::from_utf8(name) {
            Ok(s) => Ok(HostName::Borrowed(s)),
            Err(_) => Err(HostNameError::InvalidByte(0x80)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for (raw, want, borrowed) in [
            ("api.openai.com", "api.openai.com", true),
            ("API.OpenAI.com.", "api.openai.com", false),
            ("localhost", "localhost", true),
            ("dogfish", "dogfish", true),
            (
                "rr1---sn-xguxaxjvh-n8me.googlevideo.com",
                "rr1---sn-xguxaxjvh-n8me.googlevideo.com",
                true,
            ),
            ("xn--bcher-kva.example", "xn--bcher-kva.example", true),
            ("my_host.example.com", "my_host.example.com", true),
            ("example.com.", "example.com", true),
            ("a1.b2.c3d", "a1.b2.c3d", true),
        ] {
            let n = validate_host_name(raw.as_bytes()).unwrap();
            assert_eq!(n.as_str(), want);
            assert_eq!(n.is_borrowed(), borrowed, "{raw}");
            assert_eq!(n.detach().as_str(), want);
        }
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(validate_host_name(long.as_bytes()).unwrap().len(), 253);
    }

    /// The fast check agrees with the validator: it borrows exactly the names the validator
    /// borrows, and gives up on everything else.
    fn check_borrowable(raw: &[u8]) {
        let quick = borrowable_host_name(raw);
        match validate_host_name(raw) {
            Ok(HostName::Borrowed(s)) => assert_eq!(quick, Some(s), "{raw:?}"),
            Ok(HostName::Inline(_)) | Err(_) => assert_eq!(quick, None, "{raw:?}"),
        }
    }

    #[test]
    fn borrowable_names_are_the_validators_borrowed_names() {
        let long = |n: usize| format!("{}.com", "a".repeat(n));
        for raw in [
            "api.openai.com",
            "API.openai.com",
            "a.b.c.",
            "a..b",
            ".",
            "",
            "-a.b",
            "a-.b",
            "a.b-",
            "a-b.c_d",
            "1.2.3.4",
            "1.2.3.a",
            "a.1",
            "a.1a",
            "a b",
            "a.b..",
            "a.b.",
            "xn--bcher-kva.example",
            &long(63),
            &long(64),
            &"a.".repeat(126),
            &"a.".repeat(127),
        ] {
            check_borrowable(raw.as_bytes());
        }
        for b in 0..=255u8 {
            check_borrowable(&[b]);
            check_borrowable(&[b'a', b, b'.', b'c']);
            check_borrowable(&[b'a', b'.', b]);
        }
    }

    proptest::proptest! {
        #[test]
        fn borrowable_agrees_with_the_validator(
            raw in proptest::collection::vec(proptest::sample::select(
                b"ab-_.0Z9\x00\xff".to_vec()), 0..80)
        ) {
            check_borrowable(&raw);
        }
    }

    #[test]
    fn invalid_names() {
        use HostNameError::*;
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        for (raw, err) in [
            ("", Empty),
            (".", Empty),
            ("a..b", EmptyLabel),
            (".a", EmptyLabel),
            ("a.b..", EmptyLabel),
            ("-a.com", HyphenAtLabelEdge),
            ("a-.com", HyphenAtLabelEdge),
            ("a.com-", HyphenAtLabelEdge),
            ("a b.com", InvalidByte(b' ')),
            ("a\0.com", InvalidByte(0)),
            ("bücher.de", InvalidByte(0xc3)),
            ("1.2.3.4", NumericTld),
            ("1234", NumericTld),
            ("a:443", InvalidByte(b':')),
            ("[::1]", InvalidByte(b'[')),
        ] {
            assert_eq!(
                validate_host_name(raw.as_bytes()).unwrap_err(),
                err,
                "{raw:?}"
            );
        }
        assert_eq!(validate_host_name(long.as_bytes()).unwrap_err(), TooLong);
        let label = format!("{}.com", "a".repeat(64));
        assert_eq!(
            validate_host_name(label.as_bytes()).unwrap_err(),
            LabelTooLong
        );
    }
}
