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
