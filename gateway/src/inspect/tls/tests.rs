//! ClientHello parser tests: vectors, every prefix and every re-fragmentation of real hellos,
//! and a differential property test against `tls-parser`.

use proptest::prelude::*;

use bulkhead_testkit::{handshake_bytes, tls_hellos, tls_records_sized};

use super::*;

/// The real ClientHellos, each in one TLS record as its client sent it (testdata/, plus the
/// extra corpus when present): `(label, expected name, bytes)`.
fn real_hellos() -> Vec<(String, String, Vec<u8>)> {
    let rows: Vec<_> = tls_hellos(&["client__", "zapret__tls_"])
        .into_iter()
        .map(|(row, bytes)| (row.label(), row.expected.clone(), bytes))
        .collect();
    assert!(
        rows.len() >= 8,
        "the real ClientHellos of testdata/ are missing"
    );
    rows
}

/// Builds a ClientHello handshake message (header included) with the given extensions, or with
/// no extensions block at all when `exts` is `None`.
fn hello_message(exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    if let Some(exts) = exts {
        let mut block = Vec::new();
        for (ty, data) in exts {
            block.extend_from_slice(&ty.to_be_bytes());
            block.extend_from_slice(&(data.len() as u16).to_be_bytes());
            block.extend_from_slice(data);
        }
        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
        body.extend_from_slice(&block);
    }
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// Splits a handshake message into handshake records of the given sizes (cycled).
fn records(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
    tls_records_sized(msg, sizes)
}

fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (ty, name) in entries {
        list.push(*ty);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    d
}

fn one(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    records(&hello_message(Some(exts)), &[MAX_RECORD_LEN])
}

fn name_of(p: &TlsParse<'_>) -> Option<String> {
    match p {
        TlsParse::Complete(i) => i.sni.map(|n| n.to_string()),
        _ => None,
    }
}

/// The handshake bytes carried by the records of `stream` (lenient: prefixes and mutations).
fn defragment(stream: &[u8]) -> Vec<u8> {
    handshake_bytes(stream)
}

#[test]
fn simple_hello() {
    let s = one(&[(0, sni_ext(&[(0, b"api.openai.com")]))]);
    let TlsParse::Complete(info) = parse_client_hello(&s) else {
        panic!("{:?}", parse_client_hello(&s))
    };
    assert_eq!(info.sni.unwrap(), "api.openai.com");
    assert!(info.sni.unwrap().is_borrowed());
    assert!(!info.ech);
    assert_eq!(info.legacy_version, 0x0303);
    assert_eq!(info.record_version, 0x0301);
    assert_eq!(info.records, 1);
    assert_eq!(info.consumed, s.len());
    assert_eq!(info.hello_len, s.len() - 5);
}

#[test]
fn extensions_and_flags() {
    let s = one(&[
        (0x0a0a, vec![]),                                  // GREASE
        (43, vec![6, 0x3a, 0x3a, 0x03, 0x04, 0x03, 0x03]), // supported_versions
        (0, sni_ext(&[(0, b"Public.Example.COM.")])),
        (0xfe0d, vec![0, 1, 2, 3]),
    ]);
    let TlsParse::Complete(info) = parse_client_hello(&s) else {
        panic!()
    };
    assert_eq!(info.sni.unwrap(), "public.example.com");
    assert!(!info.sni.unwrap().is_borrowed());
    assert!(info.ech);
    assert_eq!(info.max_supported_version, Some(0x0304));
}

#[test]
fn no_extensions_no_sni() {
    for s in [
        records(&hello_message(None), &[1000]),
        records(&hello_message(Some(&[])), &[1000]),
        one(&[(16, vec![0, 3, 2, b'h', b'2'])]),
    ] {
        let TlsParse::Complete(info) = parse_client_hello(&s) else {
            panic!()
        };
        assert_eq!(info.sni, None);
    }
}

#[test]
fn server_name_rules() {
    use TlsError::*;
    type Case = (Vec<(u16, Vec<u8>)>, TlsParse<'static>);
    let cases: Vec<Case> = vec![
        // Empty extension, empty list.
        (vec![(0, vec![])], TlsParse::Malformed(EmptyServerName)),
        (vec![(0, vec![0, 0])], TlsParse::Malformed(EmptyServerName)),
        // Entries of another type are skipped; host_name taken.
        (
            vec![(0, sni_ext(&[(7, b"x"), (0, b"a.example")]))],
            TlsParse::Malformed(EmptyRecord), // placeholder, checked by name below
        ),
        (
            vec![(0, sni_ext(&[(0, b"a.example"), (0, b"b.example")]))],
            TlsParse::Malformed(DuplicateHostName),
        ),
        (
            vec![(0, sni_ext(&[(0, b"a.example"), (0, b"a.example")]))],
            TlsParse::Malformed(DuplicateHostName),
        ),
        (
            vec![(0, sni_ext(&[(7, b"x")]))],
            TlsParse::Malformed(NoHostName),
        ),
        (
            vec![
                (0, sni_ext(&[(0, b"a.example")])),
                (0, sni_ext(&[(0, b"b.example")])),
            ],
            TlsParse::Malformed(DuplicateServerNameExtension),
        ),
        (
            vec![(0, sni_ext(&[(0, b"10.0.0.1")]))],
            TlsParse::Malformed(InvalidHostName(HostNameError::NumericTld)),
        ),
        (
            vec![(0, sni_ext(&[(0, b"")]))],
            TlsParse::Malformed(InvalidHostName(HostNameError::Empty)),
        ),
        (
            vec![(0, sni_ext(&[(0, b"evil.com\0.allowed.com")]))],
            TlsParse::Malformed(InvalidHostName(HostNameError::InvalidByte(0))),
        ),
        // List length beyond the extension; trailing bytes after the list.
        (
            vec![(0, vec![0, 9, 0, 0, 1, b'a'])],
            TlsParse::Malformed(Truncated(Field::ServerNameList)),
        ),
        (
            vec![(0, {
                let mut d = sni_ext(&[(0, b"a.example")]);
                d.push(0);
                d
            })],
            TlsParse::Malformed(Trailing(Field::ServerNameList)),
        ),
        (
            vec![(0, vec![0, 4, 0, 0, 9, b'a'])],
            TlsParse::Malformed(Truncated(Field::ServerName)),
        ),
    ];
    for (i, (exts, want)) in cases.into_iter().enumerate() {
        let s = one(&exts);
        let got = parse_client_hello(&s);
        if i == 2 {
            assert_eq!(name_of(&got).as_deref(), Some("a.example"));
        } else {
            assert_eq!(got, want, "case {i}");
        }
    }
}

#[test]
fn framing_rules() {
    use TlsError::*;
    let good = one(&[(0, sni_ext(&[(0, b"a.example")]))]);
    assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), TlsParse::NotTls);
    assert_eq!(parse_client_hello(&[0; 512]), TlsParse::NotTls);
    // SSLv2-compatible ClientHello: msg length 0x8031, type 1, version 3.1.
    let v2 = [
        0x80, 0x31, 0x01, 0x03, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00, 0x10,
    ];
    assert_eq!(parse_client_hello(&v2), TlsParse::NotTls);
    assert_eq!(
        parse_client_hello(&[]),
        TlsParse::Incomplete { needed_hint: None }
    );
    assert_eq!(
        parse_client_hello(&good[..3]),
        TlsParse::Incomplete {
            needed_hint: Some(6)
        }
    );
    assert_eq!(
        parse_client_hello(&good[..10]),
        TlsParse::Incomplete {
            needed_hint: Some(good.len())
        }
    );
    let mut bad = good.clone();
    bad[1] = 2;
    assert_eq!(
        parse_client_hello(&bad[..2]),
        TlsParse::Malformed(RecordVersion(0x0200))
    );
    assert_eq!(
        parse_client_hello(&bad),
        TlsParse::Malformed(RecordVersion(0x0201))
    );
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0, 0, 1]),
        TlsParse::Malformed(EmptyRecord)
    );
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0x40, 0x01]),
        TlsParse::Malformed(RecordTooLong(0x4001))
    );
    let mut server_hello = good.clone();
    server_hello[5] = 2;
    assert_eq!(
        parse_client_hello(&server_hello),
        TlsParse::Malformed(NotClientHello(2))
    );
    // Handshake message larger than the limit, announced in a small first record.
    let big = [22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x00];
    assert_eq!(
        parse_client_hello(&big),
        TlsParse::Malformed(HelloTooLarge(0x10004))
    );
    // A change_cipher_spec record in the middle of the hello.
    let msg = hello_message(Some(&[(0, sni_ext(&[(0, b"a.example")]))]));
    let mut s = records(&msg[..10], &[10]);
    s.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    let cut16 = s.len() - 4;
    s.extend_from_slice(&records(&msg[10..], &[1000]));
    assert_eq!(
        parse_client_hello(&s),
        TlsParse::Malformed(InterleavedContentType(20))
    );
    // Partial header of a non-handshake record: already malformed.
    assert_eq!(
        parse_client_hello(&s[..cut16]),
        TlsParse::Malformed(InterleavedContentType(20))
    );
    // Bytes after the extensions block.
    let mut msg = hello_message(Some(&[]));
    msg.push(0);
    msg[3] += 1;
    assert_eq!(
        parse_client_hello(&records(&msg, &[1000])),
        TlsParse::Malformed(Trailing(Field::Extensions))
    );
}

#[test]
fn fragmentation_does_not_change_the_answer() {
    let msg = hello_message(Some(&[
        (10, vec![0, 2, 0, 29]),
        (0, sni_ext(&[(0, b"Split.Example.org")])),
        (0xfe0d, vec![1]),
    ]));
    let single = records(&msg, &[MAX_RECORD_LEN]);
    let whole = parse_client_hello(&single);
    let TlsParse::Complete(w) = whole else {
        panic!()
    };
    for sizes in [
        &[1usize][..],
        &[2],
        &[3, 1],
        &[4],
        &[5, 7, 1],
        &[40],
        &[msg.len() - 1],
    ] {
        let s = records(&msg, sizes);
        let TlsParse::Complete(info) = parse_client_hello(&s) else {
            panic!("{sizes:?}: {:?}", parse_client_hello(&s))
        };
        assert_eq!(info.sni, w.sni);
        assert_eq!(info.ech, w.ech);
        assert_eq!(info.hello_len, w.hello_len);
        assert_eq!(info.consumed, s.len());
        assert!(info.records > 1);
        for cut in 0..s.len() {
            assert!(
                matches!(parse_client_hello(&s[..cut]), TlsParse::Incomplete { .. }),
                "{sizes:?} cut {cut}"
            );
        }
    }
}

#[test]
fn real_hellos_give_their_names() {
    let rows = real_hellos();
    for (file, want, bytes) in &rows {
        let got = parse_client_hello(bytes);
        assert_eq!(
            name_of(&got).as_deref(),
            Some(want.as_str()),
            "{file}: {got:?}"
        );
        let TlsParse::Complete(info) = got else {
            unreachable!()
        };
        assert!(
            info.sni.unwrap().is_borrowed(),
            "{file}: single record must not copy"
        );
        println!(
            "{file}: {want} (hello {} bytes, ech {}, max version {:04x?})",
            info.hello_len, info.ech, info.max_supported_version
        );
    }
}

#[test]
fn every_prefix_of_real_hellos_is_incomplete() {
    let rows = real_hellos();
    for (file, _, bytes) in &rows {
        let end = match parse_client_hello(bytes) {
            TlsParse::Complete(i) => i.consumed,
            other => panic!("{file}: {other:?}"),
        };
        for cut in 0..end {
            let got = parse_client_hello(&bytes[..cut]);
            assert!(
                matches!(got, TlsParse::Incomplete { .. }),
                "{file} prefix {cut}: {got:?}"
            );
            if let TlsParse::Incomplete {
                needed_hint: Some(n),
            } = got
            {
                assert!(n > cut && n <= end, "{file} prefix {cut}: hint {n}");
            }
        }
    }
}

#[test]
fn real_hellos_recut_into_records() {
    let rows = real_hellos();
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for (file, want, bytes) in &rows {
        let msg = defragment(bytes);
        let mut plans: Vec<Vec<usize>> = vec![vec![1], vec![2], vec![3], vec![4], vec![5]];
        for _ in 0..20 {
            plans.push((0..8).map(|_| 1 + (next() % 700) as usize).collect());
        }
        for sizes in &plans {
            let s = records(&msg, sizes);
            let got = parse_client_hello(&s);
            assert_eq!(
                name_of(&got).as_deref(),
                Some(want.as_str()),
                "{file} {sizes:?}"
            );
        }
        // Every prefix of the 1-byte-record form.
        let s = records(&msg, &[1]);
        for cut in (0..s.len()).step_by(7) {
            assert!(matches!(
                parse_client_hello(&s[..cut]),
                TlsParse::Incomplete { .. }
            ));
        }
    }
}

/// What `tls-parser` says the server name is: `Ok(None)` without one, `Err` when it rejects the
/// message. It sees the message defragmented by the test. An extension that tls-parser fails to
/// parse is skipped by its length unless it is `server_name` (the gateway does not look inside
/// other extensions, so a mangled ALPN must not turn into a disagreement about the name).
fn oracle_name(stream: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use tls_parser::{
        parse_tls_extension, parse_tls_message_handshake, SNIType, TlsExtension, TlsMessage,
        TlsMessageHandshake,
    };
    let msg = defragment(stream);
    let (_, m) = parse_tls_message_handshake(&msg).map_err(|e| format!("{e:?}"))?;
    let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = m else {
        return Err("not a ClientHello".into());
    };
    let Some(mut ext) = ch.ext else {
        return Ok(None);
    };
    let mut name = None;
    while !ext.is_empty() {
        match parse_tls_extension(ext) {
            Ok((rest, TlsExtension::SNI(list))) => {
                name = list
                    .iter()
                    .find(|(t, _)| *t == SNIType::HostName)
                    .map(|(_, n)| n.to_vec());
                ext = rest;
            }
            Ok((rest, _)) => ext = rest,
            Err(e) => {
                if ext.len() < 4 || ext[..2] == [0, 0] {
                    return Err(format!("extension: {e:?}"));
                }
                let n = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
                if ext.len() < 4 + n {
                    return Err("extension length".into());
                }
                ext = &ext[4 + n..];
            }
        }
    }
    Ok(name)
}

/// Fails on any disagreement about the name. The gateway is stricter than tls-parser by design in
/// these cases, where it reports `Malformed` (a deny) and tls-parser a name: an invalid host name
/// (tls-parser returns any bytes), several `host_name` entries or `server_name` extensions
/// (tls-parser keeps a list), trailing bytes after the `server_name` list or the extensions
/// (tls-parser ignores them), an empty `server_name`, a session id over 32 bytes, bad record
/// framing (version, empty or oversized records). A `Malformed` answer never names anything, so
/// it cannot disagree; a name from the gateway must equal tls-parser's, and a complete hello
/// without a name must be one where tls-parser finds none either.
fn check_against_oracle(stream: &[u8]) -> Result<(), TestCaseError> {
    let ours = parse_client_hello(stream);
    let theirs = oracle_name(stream);
    match (&ours, &theirs) {
        (TlsParse::Complete(info), Ok(name)) => {
            let theirs_norm = name.as_deref().map(|n| {
                let n = n.strip_suffix(b".").unwrap_or(n);
                String::from_utf8_lossy(n).to_ascii_lowercase()
            });
            prop_assert_eq!(info.sni.map(|n| n.to_string()), theirs_norm);
        }
        (TlsParse::Complete(info), Err(e)) => {
            prop_assert!(
                info.sni.is_none(),
                "we named {:?}, tls-parser failed: {}",
                info.sni,
                e
            );
        }
        _ => {}
    }
    Ok(())
}

/// The real hellos' bytes, read once: the property tests draw from them thousands of times.
fn real_streams() -> &'static [Vec<u8>] {
    static STREAMS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    STREAMS.get_or_init(|| real_hellos().into_iter().map(|(_, _, b)| b).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn differential_against_tls_parser(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        record_size in prop_oneof![Just(MAX_RECORD_LEN), 1usize..600],
    ) {
        let base = which.get(real_streams());
        // Mutations land in the handshake message; then it is re-cut into records.
        let mut msg = defragment(base);
        for (i, v) in &muts {
            let at = i.index(msg.len());
            msg[at] = *v;
        }
        let s = records(&msg, &[record_size]);
        check_against_oracle(&s)?;
        let prefix = &s[..cut.index(s.len() + 1)];
        check_against_oracle(prefix)?;
        if muts.is_empty() && prefix.len() < s.len() {
            prop_assert!(
                matches!(parse_client_hello(prefix), TlsParse::Incomplete { .. }),
                "{:?}",
                parse_client_hello(prefix)
            );
        }
    }

    #[test]
    fn mutations_inside_the_name_region(
        which in any::<prop::sample::Index>(),
        muts in proptest::collection::vec((0usize..64, any::<u8>()), 1..3),
    ) {
        // Aim at the server_name extension, where a disagreement would matter most.
        // testdata/ always has real hellos, so no case is ever rejected for want of data.
        let original: &Vec<u8> = which.get(real_streams());
        let mut msg = defragment(original);
        let TlsParse::Complete(info) = parse_client_hello(original) else {
            return Err(TestCaseError::fail("real hello did not parse"));
        };
        let name = info.sni.unwrap().to_string();
        let at = msg.windows(name.len()).position(|w| w == name.as_bytes()).unwrap_or(0);
        let base = at.saturating_sub(9);
        for (off, v) in &muts {
            let i = (base + off).min(msg.len() - 1);
            msg[i] = *v;
        }
        check_against_oracle(&records(&msg, &[MAX_RECORD_LEN]))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_client_hello(&bytes);
        let mut s = vec![22, 3, 1];
        s.extend_from_slice(&bytes);
        let _ = parse_client_hello(&s);
    }
}

#[test]
fn oracle_reads_the_real_hellos() {
    // The differential test is only as good as its oracle: it must see the real names.
    let rows = real_hellos();
    for (file, want, bytes) in &rows {
        let got = oracle_name(bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got.as_deref(), Some(want.as_bytes()), "{file}");
        let recut = records(&defragment(bytes), &[3]);
        assert_eq!(
            oracle_name(&recut).unwrap().as_deref(),
            Some(want.as_bytes())
        );
    }
}
