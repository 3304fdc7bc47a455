//! `bulkhead replay` end to end: the binary, a policy file, real captures.

use std::process::Command;

use bulkhead_gateway::record::DecisionRecord;
use bulkhead_testkit::*;

fn write_policy(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn json_lines_carry_one_record_per_flow_with_its_end() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, POLICY_OPENAI);
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--json", "--policy"])
        .arg(&policy)
        // Chromium at a 400-byte MTU: each hello is spread over six segments.
        .arg(testdata_capture("chromium_mtu400_v4.pcap"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<DecisionRecord> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let tls: Vec<&DecisionRecord> = records.iter().filter(|r| r.tls.is_some()).collect();
    assert_eq!(tls.len(), 2, "{records:?}");
    for r in tls {
        assert_eq!(r.name(), Some("openrouter.ai"));
        // openrouter.ai is not in the policy: denied by default, and the flow end is merged in.
        assert_eq!(r.policy.name, "default");
        assert_eq!(r.activity_id, 5);
        let t = r.traffic.expect("flow end merged");
        assert!(t.packets_out >= 3);
        assert!(r.end_time.unwrap() >= r.start_time.unwrap());
        assert_eq!(r.gateway_id, "replay");
    }
    Ok(())
}

#[test]
fn the_table_lists_flows_and_a_summary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, POLICY_PERMIT_ALL);
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--policy"])
        .arg(&policy)
        .arg(testdata_capture("python_v6.pcap"))
        .arg(testdata_capture("curl_http_v4.pcap"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with("SOURCE"), "{text}");
    assert!(text.contains("api.groq.com"), "{text}");
    assert!(text.contains("fd99::1"), "{text}");
    assert!(text.contains("api.openai.com"), "{text}");
    assert!(text.contains("decisions:"), "{text}");
    Ok(())
}

#[test]
fn a_policy_with_errors_is_reported_and_nothing_is_replayed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, "[policy]\ndefault_action = \"maybe\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--policy"])
        .arg(&policy)
        .arg(dir.path().join("none.pcap"))
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.toml:2:"), "{err}");
    assert!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn a_missing_capture_is_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, POLICY_PERMIT_ALL);
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--policy"])
        .arg(&policy)
        .arg(dir.path().join("none.pcap"))
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.pcap"));
    Ok(())
}

/// The captures of `testdata/coverage` (flows met mid-stream, IP-literal names, tunnels and
/// traffic mirrors, STARTTLS), as `record.sh coverage` recorded them.
fn coverage_rows() -> Vec<bulkhead_testkit::corpus::ManifestRow> {
    let rows = bulkhead_testkit::corpus::read_manifest(
        &bulkhead_testkit::corpus::testdata_dir().join("coverage/manifest.tsv"),
        "coverage",
    );
    assert!(
        rows.len() >= 17,
        "testdata/coverage is incomplete: {rows:?}"
    );
    rows
}

/// The names the records of a replay carry (SNI or HTTP Host, as recorded), in order.
fn recorded_names(records: &[DecisionRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| {
            r.tls
                .as_ref()
                .map(|t| t.sni.clone())
                .or_else(|| r.http.as_ref().map(|h| h.host.clone()))
        })
        .collect()
}

fn is_ip_literal(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
}

#[test]
fn coverage_captures_yield_their_names_and_verdicts() -> anyhow::Result<()> {
    use bulkhead_gateway::cli::replay::replay;
    use bulkhead_gateway::record::{Disposition, Reason};
    let rows = coverage_rows();
    // A policy that permits exactly the expected host names: the verdict itself shows that the
    // name was read, and used.
    let mut names: Vec<String> = rows
        .iter()
        .flat_map(|r| r.expected_names())
        .filter(|n| !is_ip_literal(n))
        .collect();
    names.sort();
    names.dedup();
    let by_name = format!(
        r#"
[policy]
default_action = "deny"

[webgroups.expected]
domains = {names:?}

[[rules]]
name = "expected"
priority = 1
src = ["any"]
dst = ["expected"]
protocol = "tcp"
action = "permit"
log = true
"#
    );
    let mut report = Vec::new();
    for row in &rows {
        let expected = row.expected_names();
        for (label, text) in [("watch", POLICY_PERMIT_ALL), ("by-name", by_name.as_str())] {
            let r = replay(
                policy(text, 1),
                std::slice::from_ref(&row.path),
                "coverage",
                false,
            )?;
            anyhow::ensure!(r.errors.is_empty(), "{}: {:?}", row.file, r.errors);
            let found = recorded_names(&r.records);
            anyhow::ensure!(
                found == expected,
                "{} ({label}): expected {expected:?}, found {found:?}",
                row.file
            );
            if row.file.contains("_curl_v") && !row.file.starts_with("pcap/midstream") {
                anyhow::ensure!(r.decapsulated > 0, "{}: nothing decapsulated", row.file);
            }
            if label != "by-name" {
                continue;
            }
            let tcp: Vec<&DecisionRecord> = r
                .records
                .iter()
                .filter(|x| x.connection_info.protocol_num == 6)
                .collect();
            anyhow::ensure!(tcp.len() == 1, "{}: {tcp:?}", row.file);
            let rec = tcp[0];
            let want = match expected.first() {
                Some(n) if is_ip_literal(n) => (Disposition::Blocked, Reason::SniNotHostname),
                Some(_) => (Disposition::Allowed, Reason::Rule),
                None => (Disposition::Blocked, Reason::NotTls),
            };
            anyhow::ensure!(
                (rec.disposition, rec.reason) == want,
                "{}: {:?} {:?}, expected {want:?}",
                row.file,
                rec.disposition,
                rec.reason
            );
            report.push(format!(
                "{:<40} {:<36} {:?}",
                row.file,
                found.join(","),
                want
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    Ok(())
}

#[test]
fn replay_says_how_many_packets_came_out_of_tunnels() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, POLICY_PERMIT_ALL);
    let capture =
        bulkhead_testkit::corpus::testdata_dir().join("coverage/pcap/geneve_curl_v4.pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--policy"])
        .arg(&policy)
        .arg(&capture)
        .output()?;
    anyhow::ensure!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    anyhow::ensure!(text.contains("api.anthropic.com"), "{text}");
    anyhow::ensure!(text.contains("10.97.0.1:"), "the inner flow: {text}");
    anyhow::ensure!(text.contains("taken out of tunnels"), "{text}");
    anyhow::ensure!(
        !text.contains(":6081"),
        "the tunnel itself is not a flow: {text}"
    );
    Ok(())
}

/// `pcap` (classic, little-endian, as record.sh writes) without its first `n` packets: the
/// capture as it would have been started `n` packets late.
fn cut_pcap(pcap: &[u8], n: usize) -> Vec<u8> {
    assert_eq!(
        &pcap[..4],
        b"\xd4\xc3\xb2\xa1",
        "a little-endian classic pcap"
    );
    let mut out = pcap[..24].to_vec();
    let mut off = 24;
    let mut i = 0;
    while off + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        if i >= n {
            out.extend_from_slice(&pcap[off..off + 16 + caplen]);
        }
        off += 16 + caplen;
        i += 1;
    }
    out
}

#[test]
fn captures_started_late_still_name_hellos_spread_over_several_segments() -> anyhow::Result<()> {
    use bulkhead_gateway::cli::replay::replay;
    let dir = tempfile::tempdir()?;
    for (file, names) in [
        ("rustls_pq_v4.pcap", vec!["api.mistral.ai"]),
        (
            "chromium_mtu400_v4.pcap",
            vec!["openrouter.ai", "openrouter.ai"],
        ),
        ("curl_http_v4.pcap", vec!["api.openai.com"]),
    ] {
        let whole = std::fs::read(testdata_capture(file))?;
        // Started after the SYN, after the SYN-ACK, after the handshake's last ACK.
        for n in 1..=3 {
            let path = dir.path().join(format!("{n}-{file}"));
            std::fs::write(&path, cut_pcap(&whole, n))?;
            for text in [POLICY_PERMIT_ALL, POLICY_OPENAI] {
                let r = replay(policy(text, 1), std::slice::from_ref(&path), "late", false)?;
                let found = recorded_names(&r.records);
                anyhow::ensure!(
                    found == names,
                    "{file} cut {n}: expected {names:?}, found {found:?}"
                );
                anyhow::ensure!(
                    r.records
                        .iter()
                        .all(|x| x.reason != bulkhead_gateway::record::Reason::Midstream),
                    "{file} cut {n}: {:?}",
                    r.records
                );
            }
        }
    }
    Ok(())
}
