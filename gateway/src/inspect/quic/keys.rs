//! The client's Initial keys: derived from public values only (the version's salt and the
//! Destination Connection ID of the client's Initial), so any observer can remove the protection
//! (RFC 9001 5.2, RFC 9369 3.3). HKDF, AES-128-GCM and AES header protection come from
//! aws-lc-rs; nothing here implements a cipher.

use std::fmt;

use aws_lc_rs::aead::quic::{HeaderProtectionKey, AES_128};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};

/// AEAD tag length of AES-128-GCM.
pub const TAG_LEN: usize = 16;
/// Header protection sample length (RFC 9001 5.4.2).
pub const SAMPLE_LEN: usize = 16;

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// A QUIC version on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Version 1 (RFC 9000), 0x00000001.
    V1,
    /// Version 2 (RFC 9369), 0x6b3343cf.
    V2,
    /// Any other version: drafts, Google QUIC, greased or unknown. Not decrypted.
    Unknown(u32),
}

impl Version {
    /// The version of a long header's version field.
    pub fn from_wire(v: u32) -> Version {
        match v {
            0x0000_0001 => Version::V1,
            0x6b33_43cf => Version::V2,
            other => Version::Unknown(other),
        }
    }

    /// The version field's value.
    pub fn to_wire(self) -> u32 {
        match self {
            Version::V1 => 0x0000_0001,
            Version::V2 => 0x6b33_43cf,
            Version::Unknown(v) => v,
        }
    }

    /// The long-header packet type bits (RFC 9000 17.2, RFC 9369 3.2) of an Initial packet.
    pub fn initial_type_bits(self) -> Option<u8> {
        match self {
            Version::V1 => Some(0b00),
            Version::V2 => Some(0b01),
            Version::Unknown(_) => None,
        }
    }

    /// Salt and HKDF labels (key, iv, hp) of a version whose Initials can be read.
    fn params(self) -> Option<(&'static [u8; 20], [&'static [u8]; 3])> {
        match self {
            Version::V1 => Some((&SALT_V1, [b"quic key", b"quic iv", b"quic hp"])),
            Version::V2 => Some((&SALT_V2, [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"])),
            Version::Unknown(_) => None,
        }
    }
}

/// Output length for `Prk::expand`.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 7.1) with an empty context, into `out`.
fn expand_label(prk: &aws_lc_rs::hkdf::Prk, label: &[u8], out: &mut [u8]) -> Option<()> {
    let len = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).ok()?];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The raw client Initial key material of one (version, DCID): exposed for the RFC vectors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawKeys {
    /// AEAD key.
    pub key: [u8; 16],
    /// AEAD IV.
    pub iv: [u8; 12],
    /// Header protection key.
    pub hp: [u8; 16],
}

impl fmt::Debug for RawKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public values, but there is nothing to learn from printing them.
        f.write_str("RawKeys { .. }")
    }
}

impl RawKeys {
    /// The client's Initial key material for `version` and the DCID of the client's Initial.
    /// `None` for a version whose Initials cannot be read.
    pub fn client(version: Version, dcid: &[u8]) -> Option<RawKeys> {
        let (salt, [key_label, iv_label, hp_label]) = version.params()?;
        let initial = Salt::new(HKDF_SHA256, salt).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, b"client in", &mut secret)?;
        let client = aws_lc_rs::hkdf::Prk::new_less_safe(HKDF_SHA256, &secret);
        let mut keys = RawKeys {
            key: [0; 16],
            iv: [0; 12],
            hp: [0; 16],
        };
        expand_label(&client, key_label, &mut keys.key)?;
        expand_label(&client, iv_label, &mut keys.iv)?;
        expand_label(&client, hp_label, &mut keys.hp)?;
        Some(keys)
    }
}

/// Ready-to-use client Initial keys: the AEAD and the header protection cipher.
pub struct InitialKeys {
    aead: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
}

impl fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitialKeys { .. }")
    }
}

impl InitialKeys {
    /// Keys for `version` and the client's DCID; `None` for an unreadable version.
    pub fn client(version: Version, dcid: &[u8]) -> Option<InitialKeys> {
        InitialKeys::from_raw(&RawKeys::client(version, dcid)?)
    }

    /// Keys from raw key material.
    pub fn from_raw(raw: &RawKeys) -> Option<InitialKeys> {
        Some(InitialKeys {
            aead: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &raw.key).ok()?),
            iv: raw.iv,
            hp: HeaderProtectionKey::new(&AES_128, &raw.hp).ok()?,
        })
    }

    /// The 5-byte header protection mask for a 16-byte ciphertext sample.
    pub fn mask(&self, sample: &[u8]) -> Option<[u8; 5]> {
        self.hp.new_mask(sample).ok()
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (d, s) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *d ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Decrypts `in_out` (ciphertext and tag) in place; the plaintext is its prefix.
    /// `None` when authentication fails.
    pub fn open<'a>(&self, pn: u64, header: &[u8], in_out: &'a mut [u8]) -> Option<&'a mut [u8]> {
        self.aead
            .open_in_place(self.nonce(pn), Aad::from(header), in_out)
            .ok()
    }

    /// Encrypts `in_out` in place and returns the tag (for building packets).
    pub fn seal(&self, pn: u64, header: &[u8], in_out: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        let tag = self
            .aead
            .seal_in_place_separate_tag(self.nonce(pn), Aad::from(header), in_out)
            .ok()?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Some(out)
    }
}
