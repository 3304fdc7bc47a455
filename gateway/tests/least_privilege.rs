//! `bulkhead blast-radius` and `bulkhead diff` on fixtures with known answers (the
//! adversarial one: an `any` permit hidden behind a watch rule that reads like a deny-all),
//! their exit status on hostile input, the exfiltration-capable catalog and the sample policy
//! that denies it, and every containment pack with its explain cases.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    root()
        .join("testdata/least")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn bulkhead(args: &[&str]) -> Result<Output> {
    Command::new(BIN)
        .args(args)
        .output()
        .context("run bulkhead")
}

fn json(out: &Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn group<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or(&Value::Null)
}

fn flag_kinds(g: &Value) -> BTreeSet<String> {
    g["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["kind"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn blast_radius_sees_the_any_behind_the_watch_rule() -> Result<()> {
    let out = bulkhead(&[
        "blast-radius",
        "--policy",
        &fixture("watch-hides-any.toml"),
        "--json",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out)?;
    let names: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    // Ranked by exposure: any destination first, nothing permitted last.
    assert_eq!(names, ["prod-agents", "dev", "ci"]);

    let prod = group(&v, "prod-agents");
    let reach = prod["reach"].as_array().unwrap();
    assert_eq!(reach.len(), 2, "{reach:#?}");
    assert_eq!(reach[0]["dst"], "openai");
    assert_eq!(reach[0]["protocol"], "tcp");
    assert_eq!(reach[0]["ports"], serde_json::json!(["443"]));
    assert_eq!(reach[0]["rule"], "prod-openai");
    assert_eq!(reach[0]["watch"], true);
    assert_eq!(reach[1]["dst"], "any");
    assert_eq!(reach[1]["protocol"], "tcp");
    assert_eq!(reach[1]["ports"], serde_json::json!(["any"]));
    assert_eq!(reach[1]["rule"], "prod-temporary");
    assert_eq!(reach[1]["watch"], true);
    assert_eq!(
        reach[1]["watched_by"],
        serde_json::json!(["prod-deny-everything-else"])
    );
    assert_eq!(reach[1]["except"], serde_json::json!(["c2"]));
    let watch_flag = prod["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "watch-only-deny" && f["dst"] == "any")
        .context("the watch rule hiding the any permit is flagged")?;
    assert_eq!(watch_flag["rule"], "prod-temporary");
    let kinds = flag_kinds(prod);
    for k in [
        "watch-only-deny",
        "any-destination",
        "exfiltration",
        "port-range",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }

    let dev = group(&v, "dev");
    assert_eq!(dev["reach"][0]["dst"], "buckets");
    assert_eq!(
        dev["reach"][0]["ports"],
        serde_json::json!(["443", "8000-8100"])
    );
    let kinds = flag_kinds(dev);
    assert_eq!(
        kinds,
        ["exfiltration", "port-range", "wildcard"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );

    let ci = group(&v, "ci");
    assert_eq!(ci["reach"], serde_json::json!([]));
    assert_eq!(ci["flags"], serde_json::json!([]));
    Ok(())
}

#[test]
fn blast_radius_one_group_text_and_errors() -> Result<()> {
    let out = bulkhead(&[
        "blast-radius",
        "--policy",
        &fixture("watch-hides-any.toml"),
        "--group",
        "prod-agents",
    ])?;
    ensure!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with("prod-agents"), "{text}");
    assert!(!text.contains("\ndev"), "{text}");
    assert!(text.contains("any except c2"), "{text}");
    assert!(text.contains("! watch-only-deny"), "{text}");

    let out = bulkhead(&[
        "blast-radius",
        "--policy",
        &fixture("watch-hides-any.toml"),
        "--group",
        "nobody",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a smartgroup"));

    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[policy]\nmode = \"sometimes\"\n")?;
    let out = bulkhead(&["blast-radius", "--policy", bad.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn log_only_reaches_everything() -> Result<()> {
    let out = bulkhead(&[
        "blast-radius",
        "--policy",
        &fixture("observe.toml"),
        "--json",
    ])?;
    let v = json(&out)?;
    let prod = group(&v, "prod-agents");
    assert_eq!(prod["reach"][0]["rule"], "(log-only)");
    assert_eq!(prod["reach"][0]["enforced"], false);
    assert!(flag_kinds(prod).contains("log-only"));
    Ok(())
}

#[test]
fn diff_on_records_counts_the_changes() -> Result<()> {
    let out = bulkhead(&[
        "diff",
        "--policy",
        &fixture("observe.toml"),
        "--candidate",
        &fixture("watch-hides-any.toml"),
        "--records",
        &fixture("records.jsonl"),
        "--json",
    ])?;
    // Two flows that log-only forwards today are denied by the candidate.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out)?;
    assert_eq!(v["flows"], 12);
    assert_eq!(v["newly_denied"], 2);
    assert_eq!(v["newly_permitted"], 0);
    assert_eq!(v["rule_changed"], 10);
    assert_eq!(v["skipped"], 1, "the flow-end record");
    let denied: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "newly_denied")
        .map(|c| {
            (
                c["src_group"].as_str().unwrap().to_owned(),
                c["dst"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [
            ("10.9.9.9".to_owned(), "example.com".to_owned()),
            ("dev".to_owned(), "1.1.1.1".to_owned()),
        ]
    );
    let openai = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["dst"] == "api.openai.com")
        .unwrap();
    assert_eq!(openai["flows"], 5);
    assert_eq!(openai["old"]["rule"], "observe");
    assert_eq!(openai["new"]["rule"], "prod-openai");
    assert_eq!(openai["examples"].as_array().unwrap().len(), 3);

    // The same policy on both sides: nothing changes, exit 0.
    let out = bulkhead(&[
        "diff",
        "--policy",
        &fixture("observe.toml"),
        "--candidate",
        &fixture("observe.toml"),
        "--records",
        &fixture("records.jsonl"),
    ])?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)?.contains("12 flows: 0 newly denied"));
    Ok(())
}

#[test]
fn diff_on_captures_goes_through_the_pipeline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let any = dir.path().join("any.toml");
    std::fs::write(
        &any,
        "[[rules]]\nname = \"everything\"\npriority = 1\nsrc = \"any\"\ndst = \"any\"\naction = \"permit\"\n",
    )?;
    let openai = dir.path().join("openai.toml");
    std::fs::write(
        &openai,
        "[webgroups.openai]\ndomains = [\"api.openai.com\"]\n[[rules]]\nname = \"to-openai\"\npriority = 1\n\
         src = \"any\"\ndst = [\"openai\"]\nprotocol = \"tcp\"\nports = [443]\naction = \"permit\"\n",
    )?;
    let pcap = |f: &str| root().join("testdata/pcap").join(f);
    let (curl, bedrock) = (pcap("curl_v4.pcap"), pcap("openssl_tls13_v4.pcap"));
    let out = bulkhead(&[
        "diff",
        "--policy",
        any.to_str().unwrap(),
        "--candidate",
        openai.to_str().unwrap(),
        "--json",
        curl.to_str().unwrap(),
        bedrock.to_str().unwrap(),
    ])?;
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out)?;
    assert_eq!(
        (v["flows"].as_u64(), v["newly_denied"].as_u64()),
        (Some(2), Some(1))
    );
    let change = &v["changes"][0];
    assert_eq!(change["change"], "newly_denied");
    assert_eq!(change["dst"], "bedrock-runtime.us-east-1.amazonaws.com");

    // A capture cut short is an input error: exit 2, no verdicts printed.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &std::fs::read(&curl)?[..300])?;
    let out = bulkhead(&[
        "diff",
        "--policy",
        any.to_str().unwrap(),
        "--candidate",
        openai.to_str().unwrap(),
        cut.to_str().unwrap(),
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut.pcap"));
    Ok(())
}

#[test]
fn diff_refuses_hostile_records_with_status_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = std::fs::read_to_string(fixture("records.jsonl"))?;
    let first = good.lines().next().unwrap().to_owned();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            format!("{first}\nnot json\n").into_bytes(),
            ":2:",
        ),
        (
            "long",
            format!("{first}\n{}\n", "x".repeat(100_000)).into_bytes(),
            "longer than",
        ),
        ("binary", b"\xff\xfe\x00garbage\n".to_vec(), "UTF-8"),
        (
            "activity",
            first
                .replace("\"activity_id\":1", "\"activity_id\":9")
                .into_bytes(),
            "activity_id",
        ),
        (
            "address",
            first.replace("10.1.2.3", "10.1.2.300").into_bytes(),
            "not a decision record",
        ),
        (
            "deep",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            "not a decision record",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, bytes)?;
        let out = bulkhead(&[
            "diff",
            "--policy",
            &fixture("observe.toml"),
            "--candidate",
            &fixture("watch-hides-any.toml"),
            "--records",
            path.to_str().unwrap(),
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}");
    }
    // No input at all, a missing file, a directory.
    for extra in [
        vec![],
        vec!["--records", "/nonexistent/records.jsonl"],
        vec!["--records", dir.path().to_str().unwrap()],
    ] {
        let mut args = vec![
            "diff",
            "--policy",
            &*Box::leak(fixture("observe.toml").into_boxed_str()),
            "--candidate",
            &*Box::leak(fixture("observe.toml").into_boxed_str()),
        ];
        args.extend(extra);
        let out = bulkhead(&args)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    Ok(())
}

#[test]
fn diff_memory_stays_bounded_on_many_destinations() -> Result<()> {
    // 12,000 distinct names, each newly denied: the buckets stop at 10,000, the totals do not.
    let dir = tempfile::tempdir()?;
    let first = std::fs::read_to_string(fixture("records.jsonl"))?
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let mut text = String::new();
    for i in 0..12_000 {
        text.push_str(&first.replace("api.openai.com", &format!("h{i}.example.net")));
        text.push('\n');
    }
    let path = dir.path().join("many.jsonl");
    std::fs::write(&path, text)?;
    let deny = dir.path().join("deny.toml");
    std::fs::write(&deny, "[policy]\ndefault_action = \"deny\"\n")?;
    let out = bulkhead(&[
        "diff",
        "--policy",
        &fixture("observe.toml"),
        "--candidate",
        deny.to_str().unwrap(),
        "--records",
        path.to_str().unwrap(),
        "--json",
    ])?;
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out)?;
    assert_eq!(v["newly_denied"], 12_000);
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 10_001);
    let other = changes
        .iter()
        .find(|c| c["dst"] == "(other destinations)")
        .unwrap();
    assert_eq!(other["flows"], 2_000);
    Ok(())
}

/// The catalog loads through a policy anchored in `configs/`, like the sample policies.
fn load_with_catalog(text: &str) -> Result<policy_engine::LoadedPolicy> {
    policy_engine::load_policy_str(text, &root().join("configs/catalog-test.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[test]
fn exfiltration_catalog_is_documented_and_checked() -> Result<()> {
    let loaded = load_with_catalog("[policy]\ninclude = [\"webgroups/exfiltration.toml\"]\n")?;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let groups: Vec<&policy_engine::WebGroup> = loaded.policy.webgroups.iter().collect();
    let names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    for kind in [
        "exfil-object-storage",
        "exfil-paste-sites",
        "exfil-file-drop",
        "exfil-tunnels",
        "exfil-webhooks",
        "exfil-raw-code-hosting",
        "exfil-all",
    ] {
        assert!(names.contains(kind), "{kind}");
    }
    // exfil-all is exactly the union of the other groups.
    let all: BTreeSet<String> = groups
        .iter()
        .find(|g| g.name == "exfil-all")
        .unwrap()
        .patterns
        .iter()
        .map(|p| p.to_string())
        .collect();
    let union: BTreeSet<String> = groups
        .iter()
        .filter(|g| g.name != "exfil-all")
        .flat_map(|g| g.patterns.iter().map(|p| p.to_string()))
        .collect();
    assert_eq!(all, union);
    // Every group says where its names come from and when they were checked.
    let text = std::fs::read_to_string(root().join("configs/webgroups/exfiltration.toml"))?;
    for name in names.iter().filter(|n| **n != "exfil-all") {
        let at = text.find(&format!("[webgroups.{name}]")).unwrap();
        let comment_start = text[..at].rfind("\n\n").unwrap_or(0);
        let comment = &text[comment_start..at];
        assert!(
            comment.contains("Sources") && comment.contains("checked 2026-"),
            "{name}: {comment}"
        );
    }
    // Virtual-hosted buckets cannot be a pattern; the catalog's exact endpoints can.
    assert!(policy_engine::NamePattern::parse("*.s3.amazonaws.com").is_err());
    let table = policy_engine::compile(&loaded.policy, 1);
    let all_idx = loaded
        .policy
        .webgroups
        .iter()
        .position(|g| g.name == "exfil-all")
        .unwrap();
    for name in [
        "pastebin.com",
        "s3.us-east-1.amazonaws.com",
        "my-bucket.storage.googleapis.com",
        "connect.ngrok-agent.com",
        "x1.oast.fun",
        "raw.githubusercontent.com",
    ] {
        assert!(
            loaded.policy.webgroups[all_idx]
                .patterns
                .iter()
                .any(|p| p.matches(name)),
            "{name}"
        );
    }
    for name in ["api.openai.com", "api.github.com", "huggingface.co"] {
        assert!(
            !loaded.policy.webgroups[all_idx]
                .patterns
                .iter()
                .any(|p| p.matches(name)),
            "{name}"
        );
    }
    drop(table);
    Ok(())
}

#[test]
fn the_deny_exfiltration_policy_rejects_and_records() -> Result<()> {
    let policy = root().join("configs/policies/deny-exfiltration.toml");
    let policy = policy.to_str().unwrap();
    let out = bulkhead(&["check-policy", policy])?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)?.contains("warnings:      0"));
    for (sni, action, rule) in [
        ("pastebin.com", "reject", "deny-exfiltration"),
        ("webhook.site", "reject", "deny-exfiltration"),
        ("api.openai.com", "permit", "agents-to-ai-providers"),
        ("bucket.s3.amazonaws.com", "deny", "default"),
    ] {
        let out = bulkhead(&[
            "explain",
            "--policy",
            policy,
            "--src",
            "10.1.2.3",
            "--dst",
            "192.0.2.1:443",
            "--sni",
            sni,
            "--json",
        ])?;
        let v = json(&out)?;
        assert_eq!(
            (v["action"].as_str(), v["rule"].as_str()),
            (Some(action), Some(rule)),
            "{sni}"
        );
        // Denials are always logged: every attempt is a decision record.
        if action != "permit" {
            assert_eq!(v["log"], true, "{sni}");
        }
    }
    // Nothing reaches the catalog: no group's reach is flagged exfiltration-capable.
    let out = bulkhead(&["blast-radius", "--policy", policy, "--json"])?;
    let v = json(&out)?;
    assert!(
        !flag_kinds(group(&v, "agents")).contains("exfiltration"),
        "{v:#}"
    );
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
struct Case {
    src: String,
    dst: String,
    sni: Option<String>,
    proto: String,
    action: String,
    rule: String,
}

#[test]
fn every_pack_loads_and_passes_its_explain_cases() -> Result<()> {
    let packs_dir = root().join("configs/packs");
    let docs = std::fs::read_to_string(root().join("docs/packs.md"))?;
    let mut packs = 0;
    for entry in std::fs::read_dir(&packs_dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        packs += 1;
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let p = path.to_str().unwrap();
        let out = bulkhead(&["check-policy", p])?;
        ensure!(
            out.status.success(),
            "{stem}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.stderr.is_empty(),
            "{stem} has warnings: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            docs.contains(&format!("configs/packs/{stem}.toml")),
            "docs/packs.md describes {stem}"
        );
        let cases: Cases = toml::from_str(&std::fs::read_to_string(
            packs_dir.join("cases").join(format!("{stem}.toml")),
        )?)?;
        assert!(cases.case.len() >= 5, "{stem}: too few cases");
        let mut actions = BTreeSet::new();
        for c in &cases.case {
            let mut args = vec![
                "explain", "--policy", p, "--src", &c.src, "--dst", &c.dst, "--proto", &c.proto,
                "--json",
            ];
            if let Some(sni) = &c.sni {
                args.extend(["--sni", sni]);
            }
            let v = json(&bulkhead(&args)?)?;
            assert_eq!(
                (v["action"].as_str(), v["rule"].as_str()),
                (Some(c.action.as_str()), Some(c.rule.as_str())),
                "{stem}: {c:?}"
            );
            actions.insert(c.action.clone());
        }
        // Each pack's cases show what it allows and what it stops.
        assert!(
            actions.contains("permit") && actions.len() > 1,
            "{stem}: {actions:?}"
        );
        // No pack permits an exfiltration-capable destination or `any`.
        let v = json(&bulkhead(&["blast-radius", "--policy", p, "--json"])?)?;
        for g in v["groups"].as_array().unwrap() {
            let kinds = flag_kinds(g);
            assert!(
                !kinds.contains("exfiltration") && !kinds.contains("any-destination"),
                "{stem}: {g:#}"
            );
        }
    }
    assert_eq!(packs, 6);
    Ok(())
}
