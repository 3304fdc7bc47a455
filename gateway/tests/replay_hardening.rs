//! `bulkhead replay` with captures that cannot be read, or not to their end: the others are
//! still replayed, the bad ones are named, and the exit status says so. Captures are built here
//! byte by byte (raw-IP pcap), so each test knows exactly which flows it holds.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use bulkhead_gateway::cli::replay::{replay_to, ReplayOptions};
use bulkhead_gateway::record::DecisionRecord;

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
const POLICY: &str = "[policy]\ndefault_action = \"deny\"\n";

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP segment without payload (TCP checksum left zero: replay does not verify it).
fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, seq: u32) -> Vec<u8> {
    tcp_data(src, sport, dst, dport, flags, (seq, 0), &[])
}

/// An IPv4 TCP segment with `(seq, ack)` and a payload.
fn tcp_data(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    (seq, ack): (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(40 + payload.len() as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p[34..36].copy_from_slice(&65535u16.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A raw-IP (link type 101) pcap holding `packets`, one millisecond apart from `t0` seconds.
fn pcap(t0: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&t0.to_le_bytes());
        f.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// `n` TCP flows from 10.0.0.1 to 192.0.2.1:22, each a SYN and a RST.
fn flows(n: u16, first_port: u16) -> Vec<Vec<u8>> {
    let (c, s) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1));
    (0..n)
        .flat_map(|i| {
            let port = first_port + i;
            [
                tcp(c, port, s, 22, SYN, 1000),
                tcp(c, port, s, 22, RST, 1001),
            ]
        })
        .collect()
}

fn replay(dir: &Path, captures: &[&str], json: bool) -> Output {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("replay").arg("--policy").arg(&policy);
    if json {
        cmd.arg("--json");
    }
    for c in captures {
        cmd.arg(dir.join(c));
    }
    cmd.output().unwrap()
}

fn records(out: &Output) -> Vec<DecisionRecord> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_unreadable_capture_does_not_hide_the_others() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("good.pcap"),
        pcap(1_700_000_000, &flows(3, 40000)),
    )?;
    std::fs::write(dir.path().join("empty.pcap"), b"")?;
    std::fs::write(dir.path().join("junk.pcap"), b"not a capture at all")?;
    let out = replay(
        dir.path(),
        &["good.pcap", "empty.pcap", "missing.pcap", "junk.pcap"],
        true,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(records(&out).len(), 3);
    let err = String::from_utf8_lossy(&out.stderr);
    for bad in ["empty.pcap", "missing.pcap", "junk.pcap"] {
        assert!(err.contains(bad), "{bad} not named in {err}");
    }
    assert!(!err.contains("good.pcap"), "{err}");
    // The gateway id written into the records follows the rule of gateway.id.
    let policy = dir.path().join("policy.toml");
    let out = Command::new(BIN)
        .args(["replay", "--gateway-id", "a\nb", "--policy"])
        .arg(&policy)
        .arg(dir.path().join("good.pcap"))
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // The table form too.
    let out = replay(dir.path(), &["empty.pcap", "good.pcap"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 decisions"));
    Ok(())
}

#[test]
fn a_capture_corrupt_part_way_keeps_its_flows_and_fails() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let whole = pcap(1_700_000_000, &flows(4, 41000));
    // Cut in the middle of the last record: the first three flows and a SYN are intact.
    std::fs::write(dir.path().join("cut.pcap"), &whole[..whole.len() - 20])?;
    let out = replay(dir.path(), &["cut.pcap"], true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(records(&out).len(), 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.pcap") && err.contains("truncated"),
        "{err}"
    );
    // A complete capture exits 0.
    std::fs::write(dir.path().join("whole.pcap"), &whole)?;
    assert!(replay(dir.path(), &["whole.pcap"], true).status.success());
    Ok(())
}

#[test]
fn records_are_streamed_as_flows_end() -> Result<()> {
    // The capture comes through a FIFO. Flow 1 (a SYN and a RST) is followed an hour later by
    // flow 2's SYN, which expires flow 1; the writer then waits for flow 1's record before it
    // sends the rest. Records collected until the end of the capture would never arrive in
    // time.
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("live.pcap");
    assert!(Command::new("mkfifo").arg(&fifo).status()?.success());
    let (c, s) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1));
    let mut first = pcap(1_700_000_000, &flows(1, 42000));
    let syn2 = pcap(1_700_003_600, &[tcp(c, 42001, s, 22, SYN, 1000)]);
    first.extend_from_slice(&syn2[24..]);
    let rest = pcap(1_700_003_601, &[tcp(c, 42001, s, 22, RST, 1001)])[24..].to_vec();

    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<bool> {
        use std::io::Write as _;
        let mut w = std::fs::OpenOptions::new().write(true).open(writer_path)?;
        w.write_all(&first)?;
        w.flush()?;
        let streamed = rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok();
        w.write_all(&rest)?;
        Ok(streamed)
    });

    let loaded = policy_engine::load_policy_str(POLICY, Path::new("p.toml")).unwrap();
    let policy = policy_engine::compile(&loaded.policy, 1);
    let opts = ReplayOptions {
        gateway_id: "t".into(),
        verify_checksums: false,
        ..ReplayOptions::default()
    };
    let mut seen: Vec<u16> = Vec::new();
    let summary = replay_to(policy, &[fifo], &opts, &mut |r| {
        if r.src_endpoint.port == 42000 {
            let _ = tx.send(());
        }
        seen.push(r.src_endpoint.port);
        Ok(())
    })?;
    let streamed = writer.join().expect("writer thread")?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(seen, [42000, 42001]);
    assert!(
        streamed,
        "flow 1's record came only at the end of the capture"
    );
    Ok(())
}

#[test]
fn a_flow_still_waiting_for_its_name_at_the_end_gets_a_record() -> Result<()> {
    // A handshake, then the first bytes of a ClientHello (a TLS record header promising 512
    // bytes, and 5 of them), then the capture ends: the name never came.
    let (c, s) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1));
    let hello_start = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    let packets = [
        tcp_data(c, 43000, s, 443, SYN, (1000, 0), &[]),
        tcp_data(s, 443, c, 43000, SYN | ACK, (5000, 1001), &[]),
        tcp_data(c, 43000, s, 443, ACK, (1001, 5001), &[]),
        tcp_data(c, 43000, s, 443, PSH | ACK, (1001, 5001), &hello_start),
    ];
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("cut-hello.pcap"),
        pcap(1_700_000_000, &packets),
    )?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[policy]\ndefault_action = \"deny\"\n[webgroups.ai]\ndomains = [\"api.openai.com\"]\n\
         [[rules]]\nname = \"to-ai\"\npriority = 1\nsrc = [\"any\"]\ndst = [\"ai\"]\n\
         protocol = \"tcp\"\nports = [\"443\"]\naction = \"permit\"\n",
    )?;
    let out = Command::new(BIN)
        .args(["replay", "--json", "--policy"])
        .arg(&policy)
        .arg(dir.path().join("cut-hello.pcap"))
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let recs = records(&out);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = serde_json::to_value(&recs[0])?;
    assert_eq!(r["action"], "Denied", "{r}");
    assert_eq!(r["reason"], "inspect_timeout", "{r}");
    assert_eq!(r["end_reason"], "shutdown", "{r}");
    assert_eq!(r["traffic"]["packets_out"], 3, "{r}");
    Ok(())
}
