//! ClientHello builders and TLS record framing: synthetic hellos, and real ones re-cut into
//! records of other sizes. No gateway types (see the crate docs).

/// A minimal but well-formed TLS 1.2/1.3 ClientHello naming `sni` (none when `None`), in one
/// record. `pad` adds a padding extension of that many bytes.
pub fn client_hello(sni: Option<&str>, pad: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&[0x42; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ext.extend_from_slice(n);
    }
    // supported_versions: TLS 1.3
    ext.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
    if pad > 0 {
        ext.extend_from_slice(&[0, 0x15]);
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, pad));
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    tls_records(&hs, MAX_RECORD_LEN)
}

/// The largest TLS plaintext record (RFC 8446 section 5.1).
pub const MAX_RECORD_LEN: usize = 16384;

/// Wraps handshake bytes into TLS records of at most `max` bytes each.
pub fn tls_records(hs: &[u8], max: usize) -> Vec<u8> {
    tls_records_sized(hs, &[max])
}

/// Wraps handshake bytes into TLS records whose sizes follow `sizes`, cycled (each clamped to
/// `1..=MAX_RECORD_LEN`, the last one to what is left).
pub fn tls_records_sized(hs: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hs.len() + 5 * (hs.len() / 64 + 1));
    let mut rest = hs;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (*size).clamp(1, MAX_RECORD_LEN).min(rest.len());
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// The handshake bytes carried by the records of `stream`, whatever their content type; a
/// record cut short contributes what is there, bytes after the last whole header are ignored.
/// Lenient on purpose: tests call it on prefixes and mutated streams.
pub fn handshake_bytes(stream: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(stream.len());
    let mut s = stream;
    while s.len() >= 5 {
        let n = usize::from(u16::from_be_bytes([s[3], s[4]]));
        let end = (5 + n).min(s.len());
        msg.extend_from_slice(&s[5..end]);
        s = &s[end..];
    }
    msg
}

/// The handshake bytes of `stream` when it is a sequence of whole handshake records (content
/// type 22) and nothing else.
pub fn handshake_message(mut stream: &[u8]) -> Option<Vec<u8>> {
    let mut msg = Vec::with_capacity(stream.len());
    while !stream.is_empty() {
        if stream.len() < 5 || stream[0] != 22 {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([stream[3], stream[4]]));
        msg.extend_from_slice(stream.get(5..5 + n)?);
        stream = &stream[5 + n..];
    }
    Some(msg)
}

/// Re-cuts a hello (in one or more records) into records of `max` bytes each.
pub fn recut_records(hello: &[u8], max: usize) -> Vec<u8> {
    tls_records(&handshake_bytes(hello), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recutting_keeps_the_handshake_bytes() {
        let hello = client_hello(Some("api.openai.com"), 300);
        for size in [1, 7, 100, MAX_RECORD_LEN + 5] {
            let recut = recut_records(&hello, size);
            assert_eq!(handshake_message(&recut), Some(handshake_bytes(&hello)));
        }
        let odd = tls_records_sized(&handshake_bytes(&hello), &[3, 1, 50]);
        assert_eq!(handshake_message(&odd).unwrap(), handshake_bytes(&hello));
        assert_eq!(handshake_message(&odd[..odd.len() - 1]), None);
        assert_eq!(handshake_message(&[23, 3, 3, 0, 0]), None);
        // Lenient on a cut record, and on a stray header fragment.
        assert_eq!(handshake_bytes(&hello[..20]), hello[5..20]);
        assert_eq!(handshake_bytes(&[22, 3, 1]), Vec::<u8>::new());
    }
}
