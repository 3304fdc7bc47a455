//! `bulkhead replay` end to end: the binary, a policy file, real captures.

mod common;

use std::process::Command;

use bulkhead_gateway::record::DecisionRecord;
use common::*;

fn write_policy(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn json_lines_carry_one_record_per_flow_with_its_end() -> anyhow::Result<()> {
    let Some(corpus) = corpus_dir("replay_json") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, POLICY_OPENAI);
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--json", "--policy"])
        .arg(&policy)
        .arg(corpus.join("pcap/tls__tls-client-hello-frag-01__dump_mtu300.pcap"))
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
    assert_eq!(tls.len(), 1, "{records:?}");
    let r = tls[0];
    assert_eq!(r.name(), Some("www.google.com"));
    // www.google.com is not in the policy: denied by default, and the flow end is merged in.
    assert_eq!(r.policy.name, "default");
    assert_eq!(r.activity_id, 5);
    let t = r.traffic.expect("flow end merged");
    assert!(t.packets_out >= 3);
    assert!(r.end_time.unwrap() >= r.start_time.unwrap());
    assert_eq!(r.gateway_id, "replay");
    Ok(())
}

#[test]
fn the_table_lists_flows_and_a_summary() -> anyhow::Result<()> {
    let Some(corpus) = corpus_dir("replay_table") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let policy = write_policy(&dir, POLICY_PERMIT_ALL);
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["replay", "--policy"])
        .arg(&policy)
        .arg(corpus.join("pcap/tls-duplicate-hello__input.pcap"))
        .arg(corpus.join("pcap/bug-2430__backwards.pcap"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with("SOURCE"), "{text}");
    assert!(text.contains("qagpublic.qg1.apps.qualys.com"), "{text}");
    assert!(text.contains("localhost"), "{text}");
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
