//! Vectors from the RFCs, synthesised Initials cut and shuffled in every way the collector must
//! accept or refuse, and hostile variants that must never panic. The conformance corpus is
//! read in [`corpus`].

mod corpus;

use super::build::{client_initial, crypto_frame, InitialSpec};
use super::frames::CryptoStream;
use super::keys::{InitialKeys, RawKeys};
use super::packet::{open_initial, parse_packet, Packet};
use super::*;

/// RFC 9001 Appendix A.2: the protected client Initial (v1, DCID 8394c8f03e515708).
const RFC9001_A2: &str = concat!(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11",
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399",
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c",
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212",
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5",
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208",
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec",
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3",
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db",
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c",
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8",
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556",
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74",
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a",
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00",
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632",
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964",
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd",
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff",
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198",
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd",
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73",
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f",
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e",
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade",
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047",
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2",
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4",
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0",
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e",
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0",
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400",
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab",
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9",
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4",
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064",
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241",
    "e221af44860018ab0856972e194cd934",
);

/// RFC 9369 Appendix A.2: the same ClientHello in a protected v2 client Initial.
const RFC9369_A2: &str = concat!(
    "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485",
    "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04",
    "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d",
    "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a",
    "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500",
    "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68",
    "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33",
    "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3",
    "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd",
    "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520",
    "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045",
    "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f",
    "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12",
    "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5",
    "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4",
    "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b",
    "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7",
    "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9",
    "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91",
    "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd",
    "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db",
    "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18",
    "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15",
    "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc",
    "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61",
    "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710",
    "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b",
    "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e",
    "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce",
    "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1",
    "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1",
    "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd",
    "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3",
    "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89",
    "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53",
    "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19",
    "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b",
    "a18b2faa745b6fe189cf772a9f84cbfc",
);
const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

pub(super) fn unhex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    s.chunks_exact(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// The name a collector reports after all `datagrams`, or its last answer as text.
pub(super) fn name_of(datagrams: &[&[u8]]) -> String {
    let mut c = InitialCollector::new();
    let mut last = String::new();
    for d in datagrams {
        last = match c.push(d) {
            QuicParse::Complete(info) => match info.sni {
                Some(n) => return n.to_string(),
                None => "complete without a name".to_string(),
            },
            other => format!("{other:?}"),
        };
    }
    last
}

/// The ClientHello handshake message inside the RFC 9001 A.2 Initial, decrypted with the
/// module's own reader (the vector tests check that reader against the RFC).
fn rfc_hello() -> Vec<u8> {
    let packet = unhex(RFC9001_A2);
    let Ok(Packet::Long(hdr)) = parse_packet(&packet) else {
        panic!("A.2 has a long header");
    };
    let keys = InitialKeys::client(Version::V1, &DCID).unwrap();
    let mut scratch = Vec::new();
    let (pn, range) = open_initial(&keys, &packet, hdr.pn_offset, None, &mut scratch)
        .unwrap()
        .unwrap();
    assert_eq!(pn, 2);
    let mut stream = CryptoStream::new();
    frames::walk_frames(&scratch[range], &mut stream).unwrap();
    stream.hello().unwrap().unwrap()[5..].to_vec()
}

fn spec<'a>(version: Version, key_dcid: &'a [u8], dcid: &'a [u8], pn: u64) -> InitialSpec<'a> {
    InitialSpec {
        version,
        key_dcid,
        dcid,
        scid: &[1, 2, 3, 4],
        token: &[],
        pn,
    }
}

/// `hello` cut into CRYPTO frames of `size` bytes.
fn frames_of(hello: &[u8], size: usize) -> Vec<Vec<u8>> {
    hello
        .chunks(size)
        .enumerate()
        .map(|(i, c)| crypto_frame((i * size) as u64, c))
        .collect()
}

/// Protected Initials carrying `frames`, `per_packet` frames each, numbered from `pn`.
fn initials(s: InitialSpec<'_>, frames: &[Vec<u8>], per_packet: usize) -> Vec<Vec<u8>> {
    frames
        .chunks(per_packet)
        .enumerate()
        .map(|(i, fs)| {
            let spec = InitialSpec {
                pn: s.pn + i as u64,
                ..s
            };
            client_initial(&spec, &fs.concat(), 1200).unwrap()
        })
        .collect()
}

/// A deterministic shuffle (no randomness in tests that must reproduce).
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[test]
fn rfc9001_a1_keys() {
    let k = RawKeys::client(Version::V1, &DCID).unwrap();
    assert_eq!(k.key.to_vec(), unhex("1f369613dd76d5467730efcbe3b1a22d"));
    assert_eq!(k.iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(k.hp.to_vec(), unhex("9f50449e04a0e810283a1e9933adedd2"));
}

#[test]
fn rfc9369_a1_keys() {
    let k = RawKeys::client(Version::V2, &DCID).unwrap();
    assert_eq!(k.key.to_vec(), unhex("8b1a0bc121284290a29e0971b5cd045d"));
    assert_eq!(k.iv.to_vec(), unhex("91f73e2351d8fa91660e909f"));
    assert_eq!(k.hp.to_vec(), unhex("45b95e15235d6f45a6b19cbcb0294ba9"));
    assert!(RawKeys::client(Version::Unknown(0xff00_001d), &DCID).is_none());
}

#[test]
fn rfc9001_a2_client_initial() {
    let packet = unhex(RFC9001_A2);
    assert_eq!(packet.len(), 1200);
    let mut c = InitialCollector::new();
    match c.push(&packet) {
        QuicParse::Complete(info) => {
            assert_eq!(info.sni.unwrap(), "example.com");
            assert_eq!(info.max_supported_version, Some(0x0304));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.version(), Some(Version::V1));
    assert_eq!((c.initials(), c.crypto_frames()), (1, 1));
}

#[test]
fn rfc9369_a2_client_initial() {
    let packet = unhex(RFC9369_A2);
    assert_eq!(packet.len(), 1200);
    assert_eq!(name_of(&[&packet]), "example.com");
}

#[test]
fn builder_reproduces_the_rfc_packets() {
    // A.2 sends packet number 2 in 4 bytes, a 1162-byte payload, a 2-byte Length: rebuild the
    // same plaintext and compare the protected bytes.
    let hello = rfc_hello();
    for (version, want) in [(Version::V1, RFC9001_A2), (Version::V2, RFC9369_A2)] {
        let keys = InitialKeys::client(version, &DCID).unwrap();
        let first = 0xc3 | version.initial_type_bits().unwrap() << 4;
        let mut hdr = vec![first];
        hdr.extend_from_slice(&version.to_wire().to_be_bytes());
        hdr.extend_from_slice(&[8]);
        hdr.extend_from_slice(&DCID);
        hdr.extend_from_slice(&[0, 0, 0x44, 0x9e, 0, 0, 0, 2]);
        let mut payload = crypto_frame(0, &hello);
        payload.resize(1162, 0);
        let tag = keys.seal(2, &hdr, &mut payload).unwrap();
        let mut packet = hdr;
        packet.extend_from_slice(&payload);
        packet.extend_from_slice(&tag);
        let mask = keys.mask(&packet[22..38]).unwrap();
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            packet[18 + i] ^= mask[1 + i];
        }
        assert_eq!(packet, unhex(want), "{version:?}");
    }
}

#[test]
fn shuffled_frames_across_initials_and_coalesced_packets() {
    let hello = rfc_hello();
    for size in [8usize, 40, 100] {
        for seed in 1..6u64 {
            let mut fs = frames_of(&hello, size);
            shuffle(&mut fs, seed);
            let per = fs.len().div_ceil(3);
            let mut pkts = initials(spec(Version::V1, &DCID, &DCID, 0), &fs, per);
            shuffle(&mut pkts, seed + 100);
            let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
            assert_eq!(name_of(&refs), "example.com", "size {size} seed {seed}");
            // The same packets coalesced into one datagram.
            assert_eq!(name_of(&[&pkts.concat()]), "example.com");
            // Every datagram but the last is not enough.
            let mut c = InitialCollector::new();
            for p in &refs[..refs.len() - 1] {
                assert_eq!(c.push(p), QuicParse::Incomplete);
            }
        }
    }
}

/// A settled collector still gives the hello it holds, takes its retransmissions, and refuses a
/// different hello: the check a permitted flow makes on later Initials.
#[test]
fn settled_collector_keeps_checking_later_initials() {
    let hello = rfc_hello();
    let pkts = initials(
        spec(Version::V1, &DCID, &DCID, 0),
        &frames_of(&hello, 100),
        2,
    );
    let mut c = InitialCollector::new();
    for p in &pkts[..pkts.len() - 1] {
        assert_eq!(c.push(p), QuicParse::Incomplete);
    }
    assert!(matches!(
        c.push(&pkts[pkts.len() - 1]),
        QuicParse::Complete(_)
    ));
    c.settle();
    for p in &pkts {
        let QuicParse::Complete(info) = c.push(p) else {
            panic!("a retransmission after settling");
        };
        assert_eq!(
            info.sni.map(|n| n.to_string()).as_deref(),
            Some("example.com")
        );
    }
    // Another hello under the same keys: its bytes disagree with the one kept.
    let mut other = hello.clone();
    let at = other.len() - 3;
    other[at] ^= 0x55;
    let again = initials(
        spec(Version::V1, &DCID, &DCID, 40),
        &frames_of(&other, 2000),
        1,
    );
    assert_eq!(
        c.push(&again[0]),
        QuicParse::Malformed(QuicError::InconsistentCrypto)
    );
}

#[test]
fn too_many_gaps_fail_closed() {
    // One-byte frames in shuffled order leave more holes than the bound: refused, never
    // guessed at. In order, the same frames are fine.
    let hello = rfc_hello();
    let mut fs = frames_of(&hello, 1);
    let pkts = initials(spec(Version::V1, &DCID, &DCID, 0), &fs, 64);
    let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
    assert_eq!(name_of(&refs), "example.com");
    shuffle(&mut fs, 3);
    let pkts = initials(spec(Version::V1, &DCID, &DCID, 0), &fs, 64);
    let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
    assert_eq!(
        name_of(&refs),
        format!("{:?}", QuicParse::Malformed(QuicError::TooFragmented))
    );
}

#[test]
fn overlapping_and_repeated_frames() {
    let hello = rfc_hello();
    let mut fs = frames_of(&hello, 50);
    // Overlaps that agree: frames of 30 bytes every 20 bytes, and every frame twice.
    fs.extend(
        (0..hello.len())
            .step_by(20)
            .map(|o| crypto_frame(o as u64, &hello[o..(o + 30).min(hello.len())])),
    );
    fs.extend(frames_of(&hello, 50));
    shuffle(&mut fs, 9);
    let pkts = initials(spec(Version::V2, &DCID, &DCID, 0), &fs, 4);
    let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
    assert_eq!(name_of(&refs), "example.com");
}

#[test]
fn overlapping_frames_that_disagree_fail_closed() {
    let hello = rfc_hello();
    let name_at = hello.windows(11).position(|w| w == b"example.com").unwrap();
    let mut other = hello.clone();
    other[name_at..name_at + 11].copy_from_slice(b"evilxyz.com");
    // The first half of one hello, then the whole of another.
    let a = initials(
        spec(Version::V1, &DCID, &DCID, 0),
        &[crypto_frame(0, &hello[..name_at + 5])],
        1,
    );
    let b = initials(
        spec(Version::V1, &DCID, &DCID, 1),
        &[crypto_frame(0, &other)],
        1,
    );
    assert_eq!(
        name_of(&[&a[0], &b[0]]),
        format!("{:?}", QuicParse::Malformed(QuicError::InconsistentCrypto))
    );
}

#[test]
fn after_retry_and_with_the_servers_connection_id() {
    let hello = rfc_hello();
    let (first, second) = hello.split_at(100);
    let retry_dcid = [9u8; 12];
    let server_cid = [7u8; 5];
    // Before the Retry: the first part under the original DCID.
    let a = initials(
        spec(Version::V1, &DCID, &DCID, 0),
        &[crypto_frame(0, first)],
        1,
    );
    // After it: everything again, keys and DCID from the Retry.
    let b = initials(
        spec(Version::V1, &retry_dcid, &retry_dcid, 1),
        &[crypto_frame(0, first), crypto_frame(100, second)],
        1,
    );
    assert_eq!(name_of(&[&a[0], &b[0], &b[1]]), "example.com");
    // Without a Retry, after the server's first Initial: the server's CID on the wire, the
    // original keys.
    let c = initials(
        spec(Version::V1, &DCID, &server_cid, 1),
        &[crypto_frame(100, second)],
        1,
    );
    assert_eq!(name_of(&[&a[0], &c[0]]), "example.com");
}

#[test]
fn after_version_negotiation() {
    let hello = rfc_hello();
    let v1 = initials(
        spec(Version::V1, &DCID, &DCID, 0),
        &[crypto_frame(0, &hello[..60])],
        1,
    );
    let v1_late = initials(
        spec(Version::V1, &DCID, &DCID, 1),
        &[crypto_frame(60, &hello[60..])],
        1,
    );
    // A new ClientHello in v2: it may differ from the abandoned one.
    let mut hello2 = hello.clone();
    hello2[10] ^= 0xff; // in the random
    let v2 = initials(
        spec(Version::V2, &[5; 8], &[5; 8], 0),
        &frames_of(&hello2, 90),
        1,
    );
    let mut c = InitialCollector::new();
    assert_eq!(c.push(&v1[0]), QuicParse::Incomplete);
    assert_eq!(c.push(&v2[0]), QuicParse::Incomplete);
    // A late packet of the abandoned attempt is ignored, not mixed in.
    assert_eq!(c.push(&v1_late[0]), QuicParse::Incomplete);
    for p in &v2[1..] {
        c.push(p);
    }
    match c.push(&v2[0]) {
        QuicParse::Complete(info) => assert_eq!(info.sni.unwrap(), "example.com"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.version(), Some(Version::V2));
}

#[test]
fn not_quic_and_unsupported_versions() {
    assert_eq!(name_of(&[&[0x40, 1, 2, 3]]), "NotQuic");
    let mut draft = unhex(RFC9001_A2);
    draft[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
    assert_eq!(
        name_of(&[&draft]),
        format!("{:?}", QuicParse::UnsupportedVersion(0xff00_001d))
    );
    // An unreadable version first, then v1 (after Version Negotiation).
    assert_eq!(name_of(&[&draft, &unhex(RFC9001_A2)]), "example.com");
    let mut vn = unhex(RFC9001_A2);
    vn[1..5].copy_from_slice(&[0; 4]);
    assert_eq!(
        name_of(&[&vn]),
        format!(
            "{:?}",
            QuicParse::Malformed(QuicError::VersionNegotiationFromClient)
        )
    );
}

#[test]
fn other_packets_in_the_datagram() {
    let a2 = unhex(RFC9001_A2);
    // A 0-RTT packet coalesced before the Initial, a short-header packet after it.
    let mut zero_rtt = vec![0xd0, 0, 0, 0, 1, 8];
    zero_rtt.extend_from_slice(&DCID);
    zero_rtt.extend_from_slice(&[0, 0x40, 20]);
    zero_rtt.extend_from_slice(&[0xaa; 20]);
    let mut d = zero_rtt.clone();
    d.extend_from_slice(&a2);
    d.extend_from_slice(&[0x40, 1, 2, 3]);
    assert_eq!(name_of(&[&d]), "example.com");
    // Trailing zeros after the packet (some clients pad the datagram, not the packet).
    let mut d = a2.clone();
    d.extend_from_slice(&[0; 100]);
    assert_eq!(name_of(&[&d]), "example.com");
}

#[test]
fn bounds_fail_closed() {
    let a2 = unhex(RFC9001_A2);
    // Initials that do not authenticate.
    let mut bad = a2.clone();
    bad[500] ^= 1;
    let mut c = InitialCollector::new();
    for _ in 0..MAX_UNDECRYPTABLE {
        assert_eq!(c.push(&bad), QuicParse::Incomplete);
    }
    assert_eq!(
        c.push(&bad),
        QuicParse::Malformed(QuicError::TooManyUndecryptable)
    );
    // Once failed, always failed.
    assert_eq!(
        c.push(&a2),
        QuicParse::Malformed(QuicError::TooManyUndecryptable)
    );
    // Too many connection IDs.
    let mut c = InitialCollector::new();
    for i in 0..MAX_KEY_CONTEXTS as u8 {
        let id = [i; 8];
        let p = client_initial(&spec(Version::V1, &id, &id, 0), &[1], 1200).unwrap();
        assert_eq!(c.push(&p), QuicParse::Incomplete);
    }
    let id = [0xee; 8];
    let p = client_initial(&spec(Version::V1, &id, &id, 0), &[1], 1200).unwrap();
    assert_eq!(
        c.push(&p),
        QuicParse::Malformed(QuicError::TooManyConnectionIds)
    );
    // Too many bytes of Initials (PING only).
    let p = client_initial(&spec(Version::V1, &DCID, &DCID, 0), &[1], 1200).unwrap();
    let mut c = InitialCollector::new();
    let mut last = QuicParse::Incomplete;
    for _ in 0..=MAX_INITIAL_BYTES / p.len() {
        last = c.push(&p);
    }
    assert_eq!(last, QuicParse::Malformed(QuicError::TooMuchData));
    // A frame that has no place in an Initial (STREAM).
    let p = client_initial(&spec(Version::V1, &DCID, &DCID, 0), &[0x08, 0, 0], 1200).unwrap();
    assert_eq!(
        name_of(&[&p]),
        format!("{:?}", QuicParse::Malformed(QuicError::UnexpectedFrame(8)))
    );
}

/// Every prefix and many single-byte mutations of `datagrams` (fed in order): no panic, and a
/// name is only ever the expected one.
pub(super) fn hostile_variants(datagrams: &[&[u8]], want: &str) {
    let check = |ds: &[&[u8]]| {
        let mut c = InitialCollector::new();
        for d in ds {
            if let QuicParse::Complete(info) = c.push(d) {
                if let Some(n) = info.sni {
                    // AEAD: a mutated packet cannot decrypt to another name.
                    assert_eq!(n, want);
                }
            }
        }
    };
    for (i, d) in datagrams.iter().enumerate() {
        let mut ds = datagrams.to_vec();
        for cut in 0..d.len() {
            ds[i] = &d[..cut];
            check(&ds);
        }
        for at in (0..d.len()).step_by(7) {
            for bit in [0x01u8, 0x80] {
                let mut m = d.to_vec();
                m[at] ^= bit;
                let mut ds = datagrams.to_vec();
                ds[i] = &m;
                check(&ds);
            }
        }
    }
}

#[test]
fn truncations_and_mutations_never_panic() {
    hostile_variants(&[&unhex(RFC9001_A2)], "example.com");
    hostile_variants(&[&unhex(RFC9369_A2)], "example.com");
}
