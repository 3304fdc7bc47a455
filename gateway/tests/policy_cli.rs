//! `bulkhead check-policy` and `bulkhead explain`, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;

const POLICY: &str = r#"[policy]
default_action = "deny"
include = ["catalog.toml"]

[smartgroups.prod-agents]
cidrs = ["10.1.0.0/16", "fd00:1::/64"]

[smartgroups.dev]
cidrs = ["10.2.0.0/16"]

[webgroups.openai]
domains = ["api.openai.com", "*.openai.com"]

[addressgroups.c2]
cidrs = ["203.0.113.7/32"]

[[rules]]
name = "block-c2"
priority = 10
src = "any"
dst = ["c2"]
action = "reject"

[[rules]]
name = "watch-dev"
priority = 50
src = ["dev"]
dst = "any"
action = "deny"
watch = true

[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true

[[rules]]
name = "dev-to-ai"
priority = 200
src = ["dev"]
dst = ["openai", "anthropic"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

const CATALOG: &str = r#"version = 1
[webgroups.anthropic]
domains = ["api.anthropic.com"]
"#;

fn bulkhead(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()?)
}

fn write_policy(dir: &Path, policy: &str) -> Result<String> {
    std::fs::write(dir.join("catalog.toml"), CATALOG)?;
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy)?;
    Ok(path.display().to_string())
}

#[test]
fn check_policy_summarises_a_valid_policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_policy(dir.path(), POLICY)?;
    let out = bulkhead(&["check-policy", &path])?;
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(": valid"), "{stdout}");
    assert!(
        stdout.contains("2 smartgroups, 2 webgroups, 1 addressgroups"),
        "{stdout}"
    );
    assert!(stdout.contains("rules:         4 (1 watch)"), "{stdout}");
    assert!(stdout.contains("patterns:      3"), "{stdout}");

    let out = bulkhead(&["check-policy", "--json", &path])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["rules"], 4);
    assert_eq!(v["cidrs"], 4);
    assert_eq!(v["valid"], true);
    assert!(v["compiled_bytes"].as_u64().unwrap_or(0) > 0);
    Ok(())
}

#[test]
fn check_policy_reports_every_error_and_exits_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broken = POLICY
        .replace("\"203.0.113.7/32\"", "\"203.0.113.7/24\"")
        .replace("priority = 200", "priority = 100")
        .replace(
            "src = [\"dev\"]\ndst = \"any\"",
            "src = [\"devs\"]\ndst = \"any\"",
        );
    let path = write_policy(dir.path(), &broken)?;
    let out = bulkhead(&["check-policy", &path])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr)?;
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(
        errors[0].starts_with(&format!(
            "{path}:15:10: error: CIDR `203.0.113.7/24` has host bits set"
        )),
        "{stderr}"
    );
    assert!(
        errors[1].starts_with(&format!("{path}:27:8: error: unknown smartgroup `devs`")),
        "{stderr}"
    );
    assert!(
        errors[2].starts_with(&format!(
            "{path}:44:12: error: priority 100 is already used by rule `prod-to-openai`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("invalid policy: 3 errors"), "{stderr}");
    Ok(())
}

#[test]
fn explain_json_has_the_documented_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_policy(dir.path(), POLICY)?;
    let out = bulkhead(&[
        "explain",
        "--policy",
        &path,
        "--src",
        "10.1.2.3",
        "--dst",
        "198.51.100.1:443",
        "--sni",
        "API.OpenAI.com.",
        "--json",
    ])?;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["action"], "permit");
    assert_eq!(v["enforced"], true);
    assert_eq!(v["rule"], "prod-to-openai");
    assert_eq!(v["src_groups"], serde_json::json!(["prod-agents"]));
    assert_eq!(v["dst_groups"], serde_json::json!(["openai"]));
    assert_eq!(v["name"], "api.openai.com");
    assert_eq!(v["reason"], "rule");
    assert_eq!(v["on_syn"], "needs_name");
    let considered = v["considered"].as_array().map(Vec::len);
    assert_eq!(considered, Some(3));
    assert_eq!(v["considered"][0]["matched"], false);
    assert_eq!(
        v["considered"][0]["why"],
        "destination 198.51.100.1 is not in c2"
    );
    Ok(())
}

#[test]
fn explain_watch_rule_and_host() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_policy(dir.path(), POLICY)?;
    let out = bulkhead(&[
        "explain",
        "--policy",
        &path,
        "--src",
        "10.2.0.9",
        "--dst",
        "198.51.100.1:443",
        "--host",
        "api.anthropic.com",
        "--json",
    ])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["action"], "deny");
    assert_eq!(v["enforced"], false);
    assert_eq!(v["rule"], "watch-dev");
    assert_eq!(v["effective_action"], "permit");
    assert_eq!(v["effective_rule"], "dev-to-ai");
    assert_eq!(v["name_source"], "http_host");
    assert_eq!(v["dst_groups"], serde_json::json!(["anthropic"]));
    Ok(())
}

#[test]
fn explain_default_and_text_output() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_policy(dir.path(), POLICY)?;
    let out = bulkhead(&[
        "explain",
        "--policy",
        &path,
        "--src",
        "192.0.2.1",
        "--dst",
        "[2001:db8::1]:22",
    ])?;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.starts_with("verdict:      deny (enforced)\nrule:         default\n"),
        "{text}"
    );
    assert!(
        text.contains("on the SYN:   decided without waiting for a name"),
        "{text}"
    );
    assert!(
        text.contains("no enforcing rule matched: the default action applies"),
        "{text}"
    );
    Ok(())
}

#[test]
fn explain_rejects_bad_input_with_status_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write_policy(dir.path(), POLICY)?;
    let out = bulkhead(&[
        "explain",
        "--policy",
        &path,
        "--src",
        "10.1.2.3",
        "--dst",
        "198.51.100.1:443",
        "--sni",
        "bad name",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    let broken = write_policy(dir.path(), "[policy]\nmode = \"loud\"\n")?;
    let out = bulkhead(&[
        "explain",
        "--policy",
        &broken,
        "--src",
        "10.1.2.3",
        "--dst",
        "198.51.100.1:443",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)?.contains("2:8: error: invalid mode `loud`"));
    Ok(())
}
