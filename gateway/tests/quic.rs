//! QUIC (UDP 443) through the pipeline: the name is read from the client's Initials while its
//! datagrams are held; the verdict releases, drops or refuses them; the bounds fail closed. Then
//! `bulkhead replay` over QUIC captures: one written here from built Initials (always run), and
//! every UDP/QUIC capture of the extra corpus when it is present.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bulkhead_gateway::inspect::quic::build::{client_initial, crypto_frame, InitialSpec};
use bulkhead_gateway::inspect::quic::Version;
use bulkhead_gateway::pipeline::{Disposition, DropReason, PipelineConfig};
use bulkhead_gateway::record::{DecisionRecord, Reason};
use bulkhead_testkit::corpus;
use bulkhead_testkit::packet::udp_packet;
use bulkhead_testkit::tls::{client_hello, handshake_bytes};
use bulkhead_testkit::Harness;

/// Permits api.openai.com over QUIC, rejects reject.example.net, denies the rest.
const POLICY_QUIC: &str = r#"
[policy]
default_action = "deny"

[webgroups.ai]
domains = ["api.openai.com"]

[webgroups.rejected]
domains = ["reject.example.net"]

[[rules]]
name = "reject-some"
priority = 10
src = ["any"]
dst = ["rejected"]
protocol = "udp"
ports = ["443"]
action = "reject"

[[rules]]
name = "allow-ai"
priority = 100
src = ["any"]
dst = ["ai"]
protocol = "udp"
ports = ["443"]
action = "permit"
log = true
"#;

const DCID: &[u8] = &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

fn client() -> SocketAddr {
    "10.0.0.2:51000".parse().unwrap()
}

fn server() -> SocketAddr {
    "192.0.2.10:443".parse().unwrap()
}

/// The client Initials carrying a ClientHello for `name`, cut into `parts` CRYPTO frames, one
/// per Initial (as a post-quantum key share makes real clients do), each padded to 1200 bytes.
fn initials(name: &str, dcid: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let hs = handshake_bytes(&client_hello(Some(name), 600));
    let step = hs.len().div_ceil(parts);
    hs.chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let spec = InitialSpec {
                version: Version::from_wire(1),
                key_dcid: dcid,
                dcid,
                scid: &[1, 2, 3, 4],
                token: &[],
                pn: i as u64,
            };
            let frame = crypto_frame((i * step) as u64, chunk);
            client_initial(&spec, &frame, 1200).expect("v1 Initial")
        })
        .collect()
}

fn datagrams(name: &str, parts: usize) -> Vec<Vec<u8>> {
    initials(name, DCID, parts)
        .iter()
        .map(|d| udp_packet(client(), server(), d))
        .collect()
}

#[test]
fn permit_releases_the_held_datagrams_in_order() {
    let mut h = Harness::new(POLICY_QUIC);
    let pkts = datagrams("API.OpenAI.com.", 3);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    assert_eq!(h.send(&pkts[1]), Disposition::Held);
    assert!(
        h.take_wire().is_empty(),
        "nothing leaves before the verdict"
    );
    assert_eq!(h.send(&pkts[2]), Disposition::Held);
    assert_eq!(h.take_wire(), pkts, "released in arrival order");
    // The name is normalised as for TLS, and recorded as the TLS server name.
    let d = h.decisions();
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].tls.as_ref().map(|t| t.sni.as_str()),
        Some("api.openai.com")
    );
    assert_eq!(d[0].reason, Reason::Rule);
    // The connection proper (short header) and the server's answers pass.
    let short = udp_packet(client(), server(), &[0x40, 1, 2, 3, 4, 5]);
    assert_eq!(h.send(&short), Disposition::Forward);
    let answer = udp_packet(server(), client(), &[0x40, 9, 9, 9]);
    assert_eq!(h.send(&answer), Disposition::Forward);
    // A retransmitted Initial of the same ClientHello rides on the verdict.
    assert_eq!(h.send(&pkts[1]), Disposition::Forward);
    // The permitted flow keeps only its hello (and a scratch buffer), not the 16 KiB reader.
    let kept = h.pipe.stats().held_bytes_now;
    assert!(kept > 0 && kept < 4096, "{kept}");
}

#[test]
fn deny_drops_the_held_datagrams() {
    let mut h = Harness::new(POLICY_QUIC);
    let pkts = datagrams("other.example.org", 2);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    assert_eq!(h.send(&pkts[1]), Disposition::Drop(DropReason::Policy));
    assert!(h.take_wire().is_empty());
    assert_eq!(h.decisions()[0].reason, Reason::Default);
    assert_eq!(h.names(), vec![Some("other.example.org".to_string())]);
    let again = udp_packet(client(), server(), &[0x40, 1, 2, 3]);
    assert_eq!(h.send(&again), Disposition::Drop(DropReason::Policy));
    assert!(h.take_wire().is_empty());
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

/// (type, code) of the ICMP or ICMPv6 error in a built packet.
fn icmp_type_code(p: &[u8]) -> (u8, u8) {
    let off = if p[0] >> 4 == 4 { 20 } else { 40 };
    (p[off], p[off + 1])
}

#[test]
fn reject_answers_port_unreachable() {
    let mut h = Harness::new(POLICY_QUIC);
    let pkts = datagrams("reject.example.net", 1);
    assert_eq!(h.send(&pkts[0]), Disposition::Drop(DropReason::Policy));
    let wire = h.take_wire();
    assert_eq!(wire.len(), 1, "one ICMP error");
    assert_eq!(icmp_type_code(&wire[0]), (3, 3));
    // Later datagrams of the flow are refused the same way.
    let again = udp_packet(client(), server(), &[0x40, 1, 2, 3]);
    assert_ne!(h.send(&again), Disposition::Forward);
    assert_eq!(icmp_type_code(&h.take_wire()[0]), (3, 3));

    let c6: SocketAddr = "[fd00::2]:51000".parse().unwrap();
    let s6: SocketAddr = "[2001:db8::10]:443".parse().unwrap();
    let d = &initials("reject.example.net", DCID, 1)[0];
    assert_eq!(
        h.send(&udp_packet(c6, s6, d)),
        Disposition::Drop(DropReason::Policy)
    );
    assert_eq!(icmp_type_code(&h.take_wire()[0]), (1, 4));
}

#[test]
fn broken_initials_fail_closed() {
    let mut h = Harness::new(POLICY_QUIC);
    // A v1 long header whose DCID length (0xff) runs past the packet.
    let bad = udp_packet(client(), server(), &[0xc3, 0, 0, 0, 1, 0xff, 1, 2]);
    assert_eq!(
        h.send(&bad),
        Disposition::Drop(DropReason::FailClosed(Reason::ParseError))
    );
    assert_eq!(h.decisions()[0].reason, Reason::ParseError);
    assert!(h.take_wire().iter().all(|p| icmp_type_code(p).0 == 3));
}

#[test]
fn not_quic_is_decided_without_a_name() {
    let mut h = Harness::new(POLICY_QUIC);
    let short = udp_packet(client(), server(), &[0x40, 1, 2, 3, 4]);
    assert_eq!(h.send(&short), Disposition::Drop(DropReason::Policy));
    assert_eq!(h.decisions()[0].reason, Reason::NoSni);
    assert!(h.take_wire().is_empty());
}

#[test]
fn per_flow_bound_fails_closed() {
    let config = PipelineConfig {
        max_held_bytes_per_flow: 2000,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_QUIC, config);
    let pkts = datagrams("api.openai.com", 3);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    assert_eq!(
        h.send(&pkts[1]),
        Disposition::Drop(DropReason::FailClosed(Reason::InspectOverflow))
    );
    assert_eq!(h.decisions()[0].reason, Reason::InspectOverflow);
    assert!(
        h.take_wire().iter().all(|p| p != &pkts[0]),
        "nothing held leaks"
    );
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

#[test]
fn total_bound_fails_closed() {
    let config = PipelineConfig {
        max_held_bytes_total: 1500,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_QUIC, config);
    let pkts = datagrams("api.openai.com", 2);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    assert_eq!(
        h.send(&pkts[1]),
        Disposition::Drop(DropReason::FailClosed(Reason::MemoryPressure))
    );
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

/// The reader's buffer counts towards the total: flows that each send the start of an Initial
/// cannot pin memory the bound does not see.
#[test]
fn the_total_bound_counts_the_initial_reader() {
    let config = PipelineConfig {
        max_held_bytes_total: 20_000,
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(POLICY_QUIC, config);
    let first = &initials("api.openai.com", DCID, 2)[0];
    assert_eq!(
        h.send(&udp_packet(client(), server(), first)),
        Disposition::Held
    );
    assert!(h.pipe.stats().held_bytes_now > 16 * 1024);
    let c2: SocketAddr = "10.0.0.3:52000".parse().unwrap();
    assert_eq!(
        h.send(&udp_packet(c2, server(), first)),
        Disposition::Drop(DropReason::FailClosed(Reason::MemoryPressure))
    );
}

#[test]
fn inspection_times_out() {
    let mut h = Harness::new(POLICY_QUIC);
    let pkts = datagrams("api.openai.com", 2);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    h.advance(PipelineConfig::default().inspect_timeout + Duration::from_millis(1));
    assert_eq!(h.decisions()[0].reason, Reason::InspectTimeout);
    assert!(h.take_wire().iter().all(|p| p != &pkts[0]));
    assert_ne!(h.send(&pkts[1]), Disposition::Forward);
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

#[test]
fn a_new_client_hello_on_a_permitted_flow_is_decided_again() {
    let mut h = Harness::new(POLICY_QUIC);
    let pkts = datagrams("api.openai.com", 1);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    assert_eq!(h.take_wire(), pkts);
    // Same ports, a new DCID and a hello for a name the policy denies: it does not ride on the
    // first verdict.
    let other = initials("other.example.org", &[9; 8], 1);
    let d = h.send(&udp_packet(client(), server(), &other[0]));
    assert_eq!(d, Disposition::Drop(DropReason::Policy));
    assert!(h.take_wire().is_empty(), "nothing of the new hello passes");
    let last = (*h.decisions().last().unwrap()).clone();
    assert_eq!(last.reason, Reason::Default);
    assert_eq!(
        last.tls.as_ref().map(|t| t.sni.as_str()),
        Some("other.example.org")
    );
    let short = udp_packet(client(), server(), &[0x40, 1, 2, 3]);
    assert_ne!(h.send(&short), Disposition::Forward);
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

#[test]
fn a_rejected_new_client_hello_answers_port_unreachable() {
    let mut h = Harness::new(POLICY_QUIC);
    let pkts = datagrams("api.openai.com", 1);
    assert_eq!(h.send(&pkts[0]), Disposition::Held);
    h.take_wire();
    let other = initials("reject.example.net", &[9; 8], 1);
    let d = h.send(&udp_packet(client(), server(), &other[0]));
    assert_eq!(d, Disposition::Drop(DropReason::Policy));
    let wire = h.take_wire();
    assert_eq!(wire.len(), 1);
    assert_eq!(icmp_type_code(&wire[0]), (3, 3));
}

#[test]
fn log_only_never_holds() {
    let policy = POLICY_QUIC.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    );
    let mut h = Harness::new(&policy);
    let pkts = datagrams("other.example.org", 2);
    assert_eq!(h.send(&pkts[0]), Disposition::Forward);
    assert!(h.decisions().is_empty(), "the record waits for the name");
    assert_eq!(h.send(&pkts[1]), Disposition::Forward);
    assert_eq!(h.decisions().len(), 1);
}

/// Log-only: each flow's record carries its QUIC name, the verdict for it (`Denied` or
/// `Allowed`, `Detected` since nothing is enforced) and its rule, and every flow passes whole.
#[test]
fn log_only_records_the_quic_name() {
    use bulkhead_gateway::record::{Disposition as Rec, RecordAction};
    let policy = POLICY_QUIC.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    );
    let mut h = Harness::new(&policy);
    let denied = datagrams("Other.Example.org", 2);
    for d in &denied {
        assert_eq!(h.send(d), Disposition::Forward);
    }
    let c2: SocketAddr = "10.0.0.2:51001".parse().unwrap();
    let permitted: Vec<Vec<u8>> = initials("api.openai.com", &[7; 8], 1)
        .iter()
        .map(|d| udp_packet(c2, server(), d))
        .collect();
    assert_eq!(h.send(&permitted[0]), Disposition::Forward);
    let c3: SocketAddr = "10.0.0.2:51002".parse().unwrap();
    let rejected = udp_packet(c3, server(), &initials("reject.example.net", &[6; 8], 1)[0]);
    assert_eq!(h.send(&rejected), Disposition::Forward);
    // Short-header packets and the server's answers pass too.
    assert_eq!(
        h.send(&udp_packet(client(), server(), &[0x40, 1, 2, 3])),
        Disposition::Forward
    );
    assert_eq!(
        h.send(&udp_packet(server(), client(), &[0x40, 9, 9])),
        Disposition::Forward
    );
    let d = h.decisions();
    assert_eq!(d.len(), 3, "{d:#?}");
    let by_name = |n: &str| {
        d.iter()
            .find(|r| r.tls.as_ref().is_some_and(|t| t.sni == n))
            .unwrap_or_else(|| panic!("no record for {n}: {d:#?}"))
    };
    let r = by_name("other.example.org");
    assert_eq!(
        (r.action, r.disposition, r.reason),
        (RecordAction::Denied, Rec::Detected, Reason::Default)
    );
    // Log-only enforces nothing: a permit is Detected too, with its rule.
    let r = by_name("api.openai.com");
    assert_eq!(
        (r.action, r.disposition, r.reason),
        (RecordAction::Allowed, Rec::Detected, Reason::Rule)
    );
    assert_eq!(r.policy.name, "allow-ai");
    let r = by_name("reject.example.net");
    assert_eq!(
        (r.action, r.disposition),
        (RecordAction::Denied, Rec::Detected)
    );
    assert_eq!(r.policy.name, "reject-some");
    // Nothing was held, and the readers' buffers are settled (a hello each, at most).
    assert!(h.pipe.stats().held_bytes_now < 3 * 4096);
}

/// Log-only: a flow whose first datagram is not QUIC is recorded without a name (`no_sni`), at
/// once, and passes.
#[test]
fn log_only_records_a_nameless_flow() {
    let policy = POLICY_QUIC.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    );
    let mut h = Harness::new(&policy);
    let p = udp_packet(client(), server(), &[0x40, 1, 2, 3, 4]);
    assert_eq!(h.send(&p), Disposition::Forward);
    let d = h.decisions();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, Reason::NoSni);
    assert!(d[0].tls.is_none());
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

const V2: u32 = 0x6b33_43cf;

/// A server's Version Negotiation packet (RFC 9000 17.2.1) answering a client Initial with
/// `dcid` / `scid`, listing `versions`.
fn version_negotiation(client_dcid: &[u8], client_scid: &[u8], versions: &[u32]) -> Vec<u8> {
    let mut p = vec![0x80 | 0x2a, 0, 0, 0, 0];
    p.push(client_scid.len() as u8);
    p.extend_from_slice(client_scid);
    p.push(client_dcid.len() as u8);
    p.extend_from_slice(client_dcid);
    for v in versions {
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

/// A client's Initials in `version` for a ClientHello of `name` with a key share of `share`
/// bytes, one CRYPTO frame per Initial, each padded to 1200 bytes.
fn initials_in(version: u32, name: &str, dcid: &[u8], share: usize, parts: usize) -> Vec<Vec<u8>> {
    let hs = handshake_bytes(&client_hello(Some(name), share));
    let step = hs.len().div_ceil(parts);
    hs.chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let spec = InitialSpec {
                version: Version::from_wire(version),
                key_dcid: dcid,
                dcid,
                scid: &[1, 2, 3, 4],
                token: &[],
                pn: i as u64,
            };
            client_initial(&spec, &crypto_frame((i * step) as u64, chunk), 1200).expect("Initial")
        })
        .map(|d| udp_packet(client(), server(), &d))
        .collect()
}

/// A client opens in v1 with a small hello; the server answers with Version Negotiation
/// listing only v2; the client starts over in v2 with a new DCID and a post-quantum hello over
/// two Initials. The new attempt is held until its hello is whole, read and decided on its name,
/// and released in order; then the connection proper passes.
#[test]
fn version_negotiation_then_v2_is_read_and_decided() {
    let mut h = Harness::new(POLICY_QUIC);
    let first = initials_in(1, "api.openai.com", DCID, 100, 1);
    assert_eq!(h.send(&first[0]), Disposition::Held);
    assert_eq!(h.take_wire(), first);
    let vn = udp_packet(
        server(),
        client(),
        &version_negotiation(DCID, &[1, 2, 3, 4], &[V2]),
    );
    assert_eq!(h.send(&vn), Disposition::Forward);
    assert_eq!(h.take_wire(), vec![vn]);
    let retry = initials_in(V2, "api.openai.com", &[0x5a; 12], 1600, 2);
    assert_eq!(h.send(&retry[0]), Disposition::Held);
    assert!(h.take_wire().is_empty(), "half a hello does not pass");
    assert_eq!(h.send(&retry[1]), Disposition::Held);
    assert_eq!(h.take_wire(), retry, "released in arrival order");
    let names = h.names();
    assert_eq!(
        names,
        vec![
            Some("api.openai.com".to_string()),
            Some("api.openai.com".to_string())
        ]
    );
    // A late retransmission of the abandoned v1 attempt, the v2 hello again, and the connection
    // proper all pass.
    assert_eq!(h.send(&first[0]), Disposition::Forward);
    assert_eq!(h.send(&retry[1]), Disposition::Forward);
    let short = udp_packet(client(), server(), &[0x40, 1, 2, 3]);
    assert_eq!(h.send(&short), Disposition::Forward);
    assert!(h.pipe.stats().held_bytes_now < 4096);
}

/// The same shapes, but the hello of the new attempt names what the policy denies (or
/// rejects): nothing of it reaches the server.
#[test]
fn version_negotiation_then_a_denied_name_is_refused() {
    for (name, reason) in [
        ("other.example.org", Reason::Default),
        ("reject.example.net", Reason::Rule),
    ] {
        let mut h = Harness::new(POLICY_QUIC);
        let first = initials_in(V2, "api.openai.com", DCID, 100, 1);
        assert_eq!(h.send(&first[0]), Disposition::Held);
        h.take_wire();
        let vn = udp_packet(
            server(),
            client(),
            &version_negotiation(DCID, &[1, 2, 3, 4], &[1]),
        );
        assert_eq!(h.send(&vn), Disposition::Forward);
        let retry = initials_in(1, name, &[0x5b; 8], 1600, 2);
        assert_eq!(h.send(&retry[0]), Disposition::Held);
        assert_eq!(h.send(&retry[1]), Disposition::Drop(DropReason::Policy));
        let wire = h.take_wire();
        assert!(
            wire.iter().all(|p| !retry.contains(p)),
            "{name}: nothing of the new attempt passes"
        );
        let last = (*h.decisions().last().unwrap()).clone();
        assert_eq!(last.tls.as_ref().map(|t| t.sni.as_str()), Some(name));
        assert_eq!(last.reason, reason);
        assert_eq!(h.pipe.stats().held_bytes_now, 0, "{name}");
        assert_ne!(
            h.send(&udp_packet(client(), server(), &[0x40, 1, 2])),
            Disposition::Forward
        );
    }
}

/// After a Version Negotiation the new attempt is bounded like the first: it times out when its
/// hello never completes.
#[test]
fn version_negotiation_retry_that_never_completes_times_out() {
    let mut h = Harness::new(POLICY_QUIC);
    let first = initials_in(1, "api.openai.com", DCID, 100, 1);
    assert_eq!(h.send(&first[0]), Disposition::Held);
    h.take_wire();
    let retry = initials_in(V2, "api.openai.com", &[0x5c; 8], 1600, 2);
    assert_eq!(h.send(&retry[0]), Disposition::Held);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.decisions().last().unwrap().reason, Reason::InspectTimeout);
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
    assert!(h.take_wire().iter().all(|p| !retry.contains(p)));
}

// ---- bulkhead replay ----

/// Writes a classic pcap (raw IPv4/IPv6, link type 101) of `packets`, one millisecond apart.
fn write_pcap(path: &std::path::Path, packets: &[Vec<u8>]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        f.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    std::fs::write(path, f).unwrap();
}

/// Runs `bulkhead replay --json` and returns the decision records.
fn replay(policy: &str, captures: &[&std::path::Path]) -> Vec<DecisionRecord> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--json", "--policy"])
        .arg(&p)
        .args(captures)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn tls_names(records: &[DecisionRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r.tls.as_ref().map(|t| t.sni.clone()))
        .collect()
}

#[test]
fn replay_reads_names_from_a_built_quic_capture() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("quic.pcap");
    let mut packets = datagrams("api.openai.com", 2);
    let c2: SocketAddr = "10.0.0.3:52000".parse().unwrap();
    packets.extend(
        initials("other.example.org", &[7; 8], 1)
            .iter()
            .map(|d| udp_packet(c2, server(), d)),
    );
    write_pcap(&cap, &packets);
    let records = replay(POLICY_QUIC, &[&cap]);
    assert_eq!(
        tls_names(&records),
        vec![
            "api.openai.com".to_string(),
            "other.example.org".to_string()
        ]
    );
}

/// Every UDP/QUIC capture of the extra corpus, under a policy that needs every name: the QUIC
/// names appear among the expected ones, in order.
#[test]
fn replay_reads_names_from_the_corpus_quic_captures() {
    let rows: Vec<_> = corpus::captures()
        .into_iter()
        .filter(|r| r.transport.starts_with("UDP"))
        .collect();
    if rows.is_empty() {
        eprintln!("\n*** SKIPPED: no UDP/QUIC captures (the extra corpus is absent; set BULKHEAD_CORPUS) ***\n");
        return;
    }
    let policy = POLICY_QUIC.replace("protocol = \"udp\"", "protocol = \"any\"");
    for row in &rows {
        let names = tls_names(&replay(&policy, &[&row.path]));
        let expected = row.expected_names();
        if expected.is_empty() {
            assert!(names.is_empty(), "{}: {names:?}", row.label());
            continue;
        }
        assert!(!names.is_empty(), "{}: no name read", row.label());
        let mut want = expected.iter();
        for n in &names {
            assert!(
                want.any(|w| w == n),
                "{}: {names:?} not in order within {expected:?}",
                row.label()
            );
        }
        // Permitted by name, the whole connection passes: the client's later long-header packets
        // (Initial ACKs coalesced with Handshake packets, under the server's connection ID) are
        // not taken for a new ClientHello.
        for r in replay(POLICY_NAME_PERMITS, &[&row.path]) {
            assert!(
                !matches!(r.reason, Reason::SecondHello | Reason::ParseError),
                "{}: {:?} {:?}",
                row.label(),
                r.reason,
                r.name()
            );
        }
    }
}

/// Permits everything but one name: every flow's verdict needs its name, so every QUIC flow is
/// inspected, then permitted.
const POLICY_NAME_PERMITS: &str = r#"
[policy]
default_action = "permit"

[webgroups.none]
domains = ["blocked.invalid"]

[[rules]]
name = "deny-one-name"
priority = 1
src = ["any"]
dst = ["none"]
protocol = "any"
action = "deny"
"#;

#[test]
fn block_mode_refuses_quic_with_port_unreachable() {
    let policy = POLICY_QUIC.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nquic = \"block\"",
    );
    let mut h = Harness::new(&policy);
    // Even a name the rules permit: QUIC itself is refused.
    let pkts = datagrams("api.openai.com", 1);
    assert_eq!(h.send(&pkts[0]), Disposition::Drop(DropReason::Policy));
    let wire = h.take_wire();
    assert_eq!(wire.len(), 1);
    assert_eq!(icmp_type_code(&wire[0]), (3, 3));
    assert_eq!(h.decisions()[0].reason, Reason::QuicBlocked);
    assert_eq!(h.decisions()[0].name(), None);
    // Later packets of the flow are refused too.
    assert_eq!(h.send(&pkts[0]), Disposition::Drop(DropReason::Policy));
    assert_eq!(icmp_type_code(&h.take_wire()[0]), (3, 3));
    // A UDP 443 flow that does not open with a long header is decided by the rules.
    let c2: SocketAddr = "10.0.0.3:52000".parse().unwrap();
    let short = udp_packet(c2, server(), &[0x40, 1, 2, 3]);
    assert_ne!(h.send(&short), Disposition::Forward);
    assert_eq!(h.decisions().last().unwrap().reason, Reason::NoSni);
}
