//! The sample policies of `configs/` load without errors or warnings and decide the cases their
//! comments promise.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use policy_engine::{
    compile, load_policy_file, Action, CompiledPolicy, Mode, Query, RuleRef, SynDecision,
    Transport, Verdict,
};

fn config(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(rel)
}

fn load(rel: &str) -> anyhow::Result<CompiledPolicy> {
    let loaded =
        load_policy_file(&config(rel)).map_err(|e| anyhow::anyhow!("{rel} does not load:\n{e}"))?;
    assert!(loaded.warnings.is_empty(), "{rel}: {:?}", loaded.warnings);
    Ok(compile(&loaded.policy, 1))
}

fn ask(
    table: &CompiledPolicy,
    src: &str,
    dst: &str,
    port: u16,
    name: Option<&str>,
) -> anyhow::Result<Verdict> {
    let src: IpAddr = src.parse()?;
    let dst: IpAddr = dst.parse()?;
    Ok(table.evaluate(&Query {
        src,
        dst,
        transport: Transport::Tcp,
        dst_port: port,
        name,
    }))
}

fn rule(table: &CompiledPolicy, r: RuleRef) -> &str {
    table.rule_name(r)
}

const PROD: &str = "10.1.2.3";
const PROD_V6: &str = "fd00:1::3";
const DEV: &str = "10.2.0.9";
const MCP: &str = "10.3.0.5";
const SOMEWHERE: &str = "198.18.0.10";

#[test]
fn example_prod_agents_reach_bedrock_only() -> anyhow::Result<()> {
    let t = load("policy.example.toml")?;
    assert_eq!(t.mode(), Mode::Enforce);
    for src in [PROD, PROD_V6] {
        let dst = if src.contains(':') {
            "2001:db8:1::10"
        } else {
            SOMEWHERE
        };
        let v = ask(
            &t,
            src,
            dst,
            443,
            Some("bedrock-runtime.us-east-1.amazonaws.com"),
        )?;
        assert_eq!(v.action, Action::Permit);
        assert!(v.enforced && v.log);
        assert_eq!(rule(&t, v.rule), "prod-agents-to-bedrock");
        // Another AI provider: reset, under its own rule.
        let v = ask(&t, src, dst, 443, Some("api.openai.com"))?;
        assert_eq!(v.effective_action, Action::Reject);
        assert_eq!(rule(&t, v.rule), "prod-agents-other-ai-rejected");
        // Anything else: the default.
        let v = ask(&t, src, dst, 443, Some("example.com"))?;
        assert_eq!(
            (v.effective_action, v.rule),
            (Action::Deny, RuleRef::Default)
        );
    }
    // Bedrock on another port is not permitted.
    let v = ask(
        &t,
        PROD,
        SOMEWHERE,
        8443,
        Some("bedrock-runtime.us-east-1.amazonaws.com"),
    )?;
    assert_ne!(v.effective_action, Action::Permit);
    Ok(())
}

#[test]
fn example_dev_reaches_any_provider_and_openrouter_is_watched() -> anyhow::Result<()> {
    let t = load("policy.example.toml")?;
    for name in [
        "api.openai.com",
        "api.anthropic.com",
        "us-east5-aiplatform.googleapis.com",
    ] {
        let v = ask(&t, DEV, SOMEWHERE, 443, Some(name))?;
        assert_eq!(v.action, Action::Permit, "{name}");
        assert_eq!(rule(&t, v.rule), "dev-to-ai-providers", "{name}");
    }
    let v = ask(&t, DEV, SOMEWHERE, 443, Some("openrouter.ai"))?;
    assert_eq!(v.action, Action::Deny, "the watch rule reports a denial");
    assert!(!v.enforced, "a watch rule enforces nothing");
    assert_eq!(rule(&t, v.rule), "trial-dev-no-openrouter");
    assert_eq!(v.effective_action, Action::Permit);
    assert_eq!(rule(&t, v.effective_rule), "dev-to-ai-providers");
    let v = ask(&t, DEV, SOMEWHERE, 443, Some("api.github.com"))?;
    assert_eq!(v.rule, RuleRef::Default);
    Ok(())
}

#[test]
fn example_mcp_servers_reach_the_github_api_only() -> anyhow::Result<()> {
    let t = load("policy.example.toml")?;
    let v = ask(&t, MCP, SOMEWHERE, 443, Some("api.github.com"))?;
    assert_eq!(v.effective_action, Action::Permit);
    assert_eq!(rule(&t, v.rule), "mcp-servers-to-github-api");
    for name in ["github.com", "api.openai.com", "uploads.github.com"] {
        let v = ask(&t, MCP, SOMEWHERE, 443, Some(name))?;
        assert_eq!(
            (v.effective_action, v.rule),
            (Action::Deny, RuleRef::Default),
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn example_c2_blocklist_wins_over_everything_and_is_decided_on_the_syn() -> anyhow::Result<()> {
    let t = load("policy.example.toml")?;
    for (src, dst) in [
        (PROD, "203.0.113.7"),
        (DEV, "198.51.100.20"),
        (MCP, "192.0.2.66"),
        ("172.16.0.1", "203.0.113.99"),
        (PROD_V6, "2001:db8:bad::1"),
    ] {
        // Even with a name every other rule would permit.
        let v = ask(
            &t,
            src,
            dst,
            443,
            Some("bedrock-runtime.us-east-1.amazonaws.com"),
        )?;
        assert_eq!(v.effective_action, Action::Reject, "{src} -> {dst}");
        assert_eq!(rule(&t, v.rule), "block-c2");
        let q = Query {
            src: src.parse()?,
            dst: dst.parse()?,
            transport: Transport::Udp,
            dst_port: 53,
            name: None,
        };
        match t.evaluate_without_name(&q) {
            SynDecision::Final(v) => {
                assert_eq!(v.effective_action, Action::Reject);
                assert_eq!(rule(&t, v.rule), "block-c2");
            }
            SynDecision::NeedsName => panic!("{src} -> {dst}: the blocklist needs no name"),
        }
    }
    // Next to a blocklisted address, not blocked.
    let v = ask(&t, DEV, "203.0.113.8", 443, Some("api.openai.com"))?;
    assert_eq!(rule(&t, v.rule), "dev-to-ai-providers");
    Ok(())
}

#[test]
fn observe_first_logs_everything_and_enforces_nothing() -> anyhow::Result<()> {
    let t = load("policies/observe-first.toml")?;
    assert_eq!(t.mode(), Mode::LogOnly);
    let v = ask(&t, "10.9.9.9", SOMEWHERE, 443, Some("api.mistral.ai"))?;
    assert_eq!(v.action, Action::Permit);
    assert_eq!(rule(&t, v.rule), "observe-ai-providers");
    assert!(v.log, "permitted AI flows are logged");
    for name in [Some("example.com"), None] {
        let v = ask(&t, "10.9.9.9", SOMEWHERE, 22, name)?;
        assert_eq!((v.action, v.rule), (Action::Deny, RuleRef::Default));
        assert!(!v.enforced);
        assert!(v.log, "what enforcement would deny is logged");
        assert_eq!(
            v.effective_action,
            Action::Permit,
            "log-only forwards everything"
        );
    }
    Ok(())
}
