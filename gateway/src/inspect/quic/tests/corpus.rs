//! The QUIC payloads and captures of the extra conformance corpus (`$BULKHEAD_CORPUS`, or
//! `../shared/corpus` beside the workspace; skipped loudly when absent: the project's testdata/
//! holds no QUIC, and the builder's packets are tested in the other modules).

use std::collections::HashMap;
use std::net::IpAddr;

use super::{hostile_variants, name_of, unhex};
use crate::capture::CaptureReader;
use crate::inspect::quic::{InitialCollector, QuicParse};
use crate::wire::{parse, L4};
use bulkhead_testkit::corpus::{self, ManifestRow};

/// `(file, expected name, bytes)` of the extra corpus's payloads starting with one of
/// `prefixes`; `None`, said loudly, when the corpus is absent.
fn payloads(prefixes: &[&str]) -> Option<Vec<(String, String, Vec<u8>)>> {
    let rows: Vec<(String, String, Vec<u8>)> = corpus::payloads(prefixes)
        .into_iter()
        .filter(|r| r.origin == "extra")
        .map(|r| {
            let bytes = r.bytes();
            (r.file, r.expected, bytes)
        })
        .collect();
    if rows.is_empty() {
        eprintln!("\n*** SKIPPED: no QUIC payloads (the extra corpus is absent) ***\n");
        return None;
    }
    Some(rows)
}

/// The UDP/QUIC capture rows of the extra corpus; `None`, said loudly, when it is absent.
fn quic_captures() -> Option<Vec<ManifestRow>> {
    let rows: Vec<ManifestRow> = corpus::captures()
        .into_iter()
        .filter(|r| r.origin == "extra" && r.transport == "UDP/QUIC")
        .collect();
    if rows.is_empty() {
        eprintln!("\n*** SKIPPED: no QUIC captures (the extra corpus is absent) ***\n");
        return None;
    }
    Some(rows)
}

#[test]
fn corpus_payloads() {
    let Some(rows) = payloads(&["zapret__quic", "rfc9001"]) else {
        return;
    };
    let by_file: HashMap<&str, &[u8]> = rows
        .iter()
        .map(|(f, _, b)| (f.as_str(), b.as_slice()))
        .collect();
    let mut checked = 0;
    for (file, want, bytes) in &rows {
        let want = if want == "-" {
            "NotQuic"
        } else {
            want.as_str()
        };
        let bytes = if file.ends_with(".hex") {
            unhex(std::str::from_utf8(bytes).unwrap())
        } else {
            bytes.to_vec()
        };
        if let Some(stem) = file.strip_suffix("_kyber_1.bin") {
            let other = by_file[format!("{stem}_kyber_2.bin").as_str()];
            // One ClientHello over two Initials: neither alone, both in either order.
            assert_eq!(name_of(&[&bytes]), "Incomplete", "{file}");
            assert_eq!(name_of(&[other]), "Incomplete", "{file} second");
            assert_eq!(name_of(&[&bytes, other]), want, "{file}");
            assert_eq!(name_of(&[other, &bytes]), want, "{file} reversed");
            assert_eq!(name_of(&[&[bytes.as_slice(), other].concat()]), want);
            checked += 1;
        } else if !file.ends_with("_kyber_2.bin") {
            assert_eq!(name_of(&[&bytes]), want, "{file}");
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} QUIC payloads in the corpus");
}

#[test]
fn corpus_payloads_hostile_variants() {
    let Some(rows) = payloads(&["zapret__quic_initial_rutracker_org_kyber"]) else {
        return;
    };
    let [(_, want, a), (_, _, b)] = rows.as_slice() else {
        panic!(
            "expected the rutracker kyber pair, found {} rows",
            rows.len()
        );
    };
    hostile_variants(&[a, b], want);
}

/// Client datagrams to UDP port 443 of a capture, grouped by flow, each with its index in the
/// capture; and whether the capture also holds TCP data to port 443.
type Flows = Vec<Vec<(usize, Vec<u8>)>>;

fn client_flows(path: &std::path::Path) -> (Flows, bool) {
    let mut reader = CaptureReader::open(path).unwrap();
    let mut index: HashMap<(IpAddr, u16, IpAddr), usize> = HashMap::new();
    let mut flows: Flows = Vec::new();
    let mut tcp = false;
    let mut n = 0usize;
    while let Some(pkt) = reader.next_packet().unwrap() {
        n += 1;
        let Ok(p) = parse(pkt.packet) else { continue };
        let u = match p.l4 {
            L4::Udp(u) if u.dst_port == 443 => u,
            L4::Tcp(t) if t.dst_port == 443 && !t.payload.is_empty() => {
                tcp = true;
                continue;
            }
            _ => continue,
        };
        let key = (p.src, u.src_port, p.dst);
        let i = *index.entry(key).or_insert_with(|| {
            flows.push(Vec::new());
            flows.len() - 1
        });
        flows[i].push((n, u.payload.to_vec()));
    }
    (flows, tcp)
}

/// Per capture, the names in the order their flows complete. The manifest lists the hellos of
/// TCP flows too: where a capture has some, the QUIC names must appear among the expected ones
/// in order (the replay tests check the whole list).
#[test]
fn corpus_captures() {
    let Some(rows) = quic_captures() else { return };
    let mut checked = 0;
    for row in &rows {
        let mut got: Vec<(usize, String)> = Vec::new();
        let (flows, tcp) = client_flows(&row.path);
        for flow in flows {
            let mut c = InitialCollector::new();
            for &(n, ref d) in &flow {
                match c.push(d) {
                    QuicParse::Complete(info) => {
                        let name = info.sni.map_or("-".to_string(), |s| s.to_string());
                        got.push((n, name));
                        break;
                    }
                    QuicParse::Incomplete => {}
                    other => {
                        got.push((n, format!("{other:?}")));
                        break;
                    }
                }
            }
        }
        got.sort();
        let names: Vec<&str> = got.iter().map(|(_, n)| n.as_str()).collect();
        if tcp {
            let mut want = row.expected.split(',');
            for n in &names {
                assert!(
                    want.any(|w| w == *n),
                    "{}: {names:?} in {}",
                    row.file,
                    row.expected
                );
            }
            assert!(!names.is_empty(), "{}", row.file);
        } else {
            assert_eq!(names.join(","), row.expected, "{}", row.file);
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} QUIC captures in the corpus");
}
