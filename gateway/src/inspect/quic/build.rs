//! Builds protected client Initial packets: the inverse of the reader, for tests, fuzzing
//! and benches that need Initials cut, shuffled or re-keyed in ways no capture shows.

use super::keys::{InitialKeys, Version, TAG_LEN};

/// Appends `v` as a QUIC variable-length integer (shortest form; `v` < 2^62).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x3f => out.push(v as u8),
        0x40..=0x3fff => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// A CRYPTO frame carrying `data` at `offset`.
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    put_varint(&mut f, offset);
    put_varint(&mut f, data.len() as u64);
    f.extend_from_slice(data);
    f
}

/// One client Initial.
#[derive(Debug, Clone, Copy)]
pub struct InitialSpec<'a> {
    /// Version (1 or 2; others cannot be protected).
    pub version: Version,
    /// The DCID the keys are derived from: the client's first DCID, or a Retry's SCID.
    pub key_dcid: &'a [u8],
    /// The DCID on the wire (differs from `key_dcid` once the server has chosen one).
    pub dcid: &'a [u8],
    /// Source connection ID.
    pub scid: &'a [u8],
    /// Token (from a Retry or NEW_TOKEN).
    pub token: &'a [u8],
    /// Packet number (sent in 4 bytes).
    pub pn: u64,
}

/// A protected Initial carrying `frames`, padded with PADDING frames so that the whole packet
/// is at least `min_len` bytes. `None` for a version without Initial keys.
pub fn client_initial(spec: &InitialSpec<'_>, frames: &[u8], min_len: usize) -> Option<Vec<u8>> {
    let keys = InitialKeys::client(spec.version, spec.key_dcid)?;
    let type_bits = spec.version.initial_type_bits()?;
    let mut hdr = vec![0xc0 | type_bits << 4 | 3];
    hdr.extend_from_slice(&spec.version.to_wire().to_be_bytes());
    hdr.push(spec.dcid.len() as u8);
    hdr.extend_from_slice(spec.dcid);
    hdr.push(spec.scid.len() as u8);
    hdr.extend_from_slice(spec.scid);
    put_varint(&mut hdr, spec.token.len() as u64);
    hdr.extend_from_slice(spec.token);
    let mut payload = frames.to_vec();
    // Length field (4-byte varint, so that padding does not change the header) + pn + tag.
    let fixed = hdr.len() + 4 + 4 + TAG_LEN;
    if fixed + payload.len() < min_len {
        payload.resize(min_len - fixed, 0);
    }
    let length = (4 + payload.len() + TAG_LEN) as u32;
    hdr.extend_from_slice(&(length | 0x8000_0000).to_be_bytes());
    let pn_offset = hdr.len();
    hdr.extend_from_slice(&(spec.pn as u32).to_be_bytes());
    let tag = keys.seal(spec.pn, &hdr, &mut payload)?;
    let mut packet = hdr;
    packet.extend_from_slice(&payload);
    packet.extend_from_slice(&tag);
    let sample_at = pn_offset + 4;
    let mask = keys.mask(packet.get(sample_at..sample_at + 16)?)?;
    packet[0] ^= mask[0] & 0x0f;
    for i in 0..4 {
        packet[pn_offset + i] ^= mask[1 + i];
    }
    Some(packet)
}
