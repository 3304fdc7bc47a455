//! `bulkheadctl recommend` and `bulkheadctl diff` against a real controller over gRPC with
//! mutual TLS: records sent on a gateway stream, the real binary as the operator, the
//! recommendation fed back through the diff of `bulkhead diff` (zero newly denied flows on the
//! traffic it came from), version diffs, and the refusals.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{bundle, eventually, Lab};
use control_proto::v1::gateway_message::Message as Out;
use control_proto::v1::{DecisionBatch, GatewayMessage, PushRequest, ReportRequest};
use policy_engine::least::flows::FlowDiff;

const BIN: &str = env!("CARGO_BIN_EXE_bulkheadctl");

const OBSERVE: &str = r#"
[policy]
default_action = "deny"
mode = "log-only"

[smartgroups.prod]
cidrs = ["10.1.0.0/16"]

[smartgroups.dev]
cidrs = ["10.2.0.0/16"]

[webgroups.openai]
domains = ["api.openai.com"]

[[rules]]
name = "prod-openai"
priority = 10
src = ["prod"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true

[[rules]]
name = "observe"
priority = 100
src = "any"
dst = "any"
action = "permit"
log = true
"#;

const ENFORCE: &str = r#"
[policy]
default_action = "deny"

[smartgroups.prod]
cidrs = ["10.1.0.0/16"]

[smartgroups.dev]
cidrs = ["10.2.0.0/16"]

[webgroups.openai]
domains = ["api.openai.com"]

[[rules]]
name = "prod-openai"
priority = 10
src = ["prod"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true
"#;

/// One decision record in the log's schema.
fn record(
    src: &str,
    dst: &str,
    port: u16,
    proto: u8,
    sni: Option<&str>,
    disposition: &str,
) -> String {
    let name = sni
        .map(|n| format!(r#","tls":{{"sni":"{n}"}}"#))
        .unwrap_or_default();
    let host = sni
        .map(|n| format!(r#","hostname":"{n}""#))
        .unwrap_or_default();
    let activity = if disposition == "Blocked" { 5 } else { 1 };
    format!(
        r#"{{"time":{},"class_uid":4001,"category_uid":4,"type_uid":{},"activity_id":{activity},"severity_id":1,"metadata":{{"product":{{"name":"Bulkhead","vendor_name":"Bulkhead","version":"0.1.0"}},"version":"1.1.0"}},"action":"Allowed","action_id":1,"disposition":"{disposition}","disposition_id":15,"src_endpoint":{{"ip":"{src}","port":40000}},"dst_endpoint":{{"ip":"{dst}","port":{port}{host}}},"connection_info":{{"protocol_name":"{}","protocol_num":{proto}}}{name},"policy":{{"name":"observe","version":1}},"src_groups":[],"dst_groups":[],"reason":"rule","gateway_id":"g1"}}"#,
        bulkhead_controller::config::now_ms(),
        400_100 + activity,
        if proto == 17 { "udp" } else { "tcp" },
    )
}

fn records() -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..4 {
        v.push(record(
            "10.1.2.3",
            "198.18.0.10",
            443,
            6,
            Some("api.openai.com"),
            "Allowed",
        ));
    }
    v.push(record(
        "10.1.2.3",
        "140.82.112.6",
        443,
        6,
        Some("api.github.com"),
        "Detected",
    ));
    v.push(record(
        "10.1.2.3",
        "140.82.112.6",
        443,
        6,
        Some("api.github.com"),
        "Detected",
    ));
    v.push(record("10.2.0.7", "192.0.2.53", 53, 17, None, "Detected"));
    v.push(record(
        "10.2.0.7",
        "34.1.1.1",
        443,
        6,
        Some("b1.storage.googleapis.com"),
        "Detected",
    ));
    v.push(record(
        "10.9.9.9",
        "93.184.216.34",
        443,
        6,
        Some("example.com"),
        "Detected",
    ));
    v
}

fn ctl(lab: &Lab, cert: &str, args: &[&str]) -> Output {
    let pki = lab.root.join("pki");
    Command::new(BIN)
        .args(args)
        .env("BULKHEAD_CONTROLLER", lab.url())
        .env("BULKHEAD_CA", pki.join("ca.pem"))
        .env("BULKHEAD_CERT", pki.join(format!("{cert}.pem")))
        .env("BULKHEAD_KEY", pki.join(format!("{cert}.key")))
        .output()
        .unwrap()
}

async fn ctl_async(lab: &Lab, cert: &'static str, args: &[&str]) -> Output {
    let pki_root = lab.root.clone();
    let url = lab.url();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let pki = pki_root.join("pki");
        Command::new(BIN)
            .args(&args)
            .env("BULKHEAD_CONTROLLER", url)
            .env("BULKHEAD_CA", pki.join("ca.pem"))
            .env("BULKHEAD_CERT", pki.join(format!("{cert}.pem")))
            .env("BULKHEAD_KEY", pki.join(format!("{cert}.key")))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn push(lab: &Lab, text: &str) -> u64 {
    let mut op = lab.operator().await;
    let reply = op
        .push(PushRequest {
            policy: Some(bundle(text)),
            inventory: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.errors.is_empty(), "{:?}", reply.errors);
    reply.version
}

async fn send_records(lab: &Lab, records: Vec<String>) {
    let (tx, _inbound) = lab.raw_gateway("g1", "g1").await.unwrap();
    let n = records.len();
    tx.send(GatewayMessage {
        message: Some(Out::Decisions(DecisionBatch {
            records_json: records,
            dropped: 0,
        })),
    })
    .await
    .unwrap();
    let op = lab.operator().await;
    eventually("records stored", || {
        let mut op = op.clone();
        async move {
            let rows = op
                .report(ReportRequest {
                    since_seconds: 3600,
                })
                .await
                .unwrap()
                .into_inner()
                .rows;
            rows.iter().map(|r| r.flows).sum::<u64>() == n as u64
        }
    })
    .await;
}

fn load(text: &str, name: &str) -> policy_engine::Policy {
    policy_engine::load_policy_str(text, Path::new(name))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .policy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_builds_a_policy_that_keeps_every_flow_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;
    // Nothing served yet: nothing to start from.
    let out = ctl_async(&lab, "operator-alice", &["recommend"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(push(&lab, OBSERVE).await, 1);
    let recs = records();
    send_records(&lab, recs.clone()).await;

    let out = ctl_async(&lab, "operator-alice", &["recommend", "--since", "1h"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let recommended = load(&text, "recommended.toml");
    assert!(text.contains("[webgroups.openai]"), "{text}");
    assert!(text.contains("\"api.github.com\",  # 2 flows"), "{text}");
    assert!(text.contains("EXFILTRATION-CAPABLE"), "{text}");
    assert!(text.contains("[smartgroups.\"host-10.9.9.9\"]"), "{text}");
    assert!(
        stderr.contains("recommended from 9 records (9 flows)"),
        "{stderr}"
    );
    assert!(stderr.contains("log-only"), "{stderr}");

    // Fed back through the diff of `bulkhead diff`, on the records it was built from.
    let file = dir.path().join("records.jsonl");
    std::fs::write(&file, recs.join("\n")).unwrap();
    let current = load(OBSERVE, "current.toml");
    let (cc, rc) = (
        policy_engine::compile(&current, 1),
        policy_engine::compile(&recommended, 2),
    );
    let mut diff = FlowDiff::new(&cc, &rc);
    let mut skipped = 0;
    bulkhead_gateway::cli::diff::read_records(&file, &mut |f| diff.add(&f), &mut skipped).unwrap();
    let totals = diff.totals();
    assert_eq!((totals.flows, totals.newly_denied), (9, 0), "{text}");

    // One group, as JSON.
    let out = ctl_async(
        &lab,
        "operator-alice",
        &["recommend", "--since", "1h", "--group", "dev", "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["based_on_version"], 1);
    assert_eq!(v["flows"], 2);
    let policy = v["policy"].as_str().unwrap();
    assert!(
        policy.contains("[smartgroups.dev]") && !policy.contains("[smartgroups.prod]"),
        "{policy}"
    );
    load(policy, "dev.toml");

    // An unknown group is the controller's answer (exit 1); a gateway certificate may not ask
    // (exit 3); a bad window is a usage error (exit 2).
    let out = ctl_async(&lab, "operator-alice", &["recommend", "--group", "nobody"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    lab.pki.gateway("g2");
    let out = ctl_async(&lab, "gateway-g2", &["recommend"]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&lab, "operator-alice", &["recommend", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_lists_rule_group_and_verdict_changes_between_versions() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;
    assert_eq!(push(&lab, OBSERVE).await, 1);
    assert_eq!(push(&lab, ENFORCE).await, 2);
    send_records(&lab, records()).await;

    let out = ctl_async(&lab, "operator-alice", &["diff", "1", "2", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["from"].as_u64(), v["to"].as_u64()), (Some(1), Some(2)));
    let changes: Vec<(String, String, String)> = v["policy_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("policy".into(), "policy".into(), "changed".into()),
            ("rule".into(), "observe".into(), "removed".into()),
        ]
    );
    // Log-only forwarded everything; version 2 keeps only prod -> openai.
    assert_eq!(v["flows"], 9);
    assert_eq!(v["newly_denied"], 5);
    // prod -> openai is decided by the same rule in both.
    assert_eq!(v["unchanged"], 4);
    assert_eq!(v["rule_changed"], 0);
    let github = v["verdict_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["dst"] == "api.github.com")
        .unwrap();
    assert_eq!(github["change"], "newly_denied");
    assert_eq!(github["src_group"], "prod");
    assert_eq!(github["flows"], 2);
    assert_eq!(github["old"]["rule"], "observe");
    assert_eq!(github["new"]["rule"], "default");

    let out = ctl_async(&lab, "operator-alice", &["diff", "1", "2"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("version 1 -> 2"), "{text}");
    assert!(
        text.contains("9 flows from the fleet's records: 5 newly denied"),
        "{text}"
    );

    let out = ctl_async(&lab, "operator-alice", &["diff", "1", "7"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version 7"));
    let out = ctl(&lab, "operator-alice", &["diff", "1"]);
    assert_eq!(out.status.code(), Some(2));
}
