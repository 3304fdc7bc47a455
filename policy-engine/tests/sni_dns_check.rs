//! `sni_dns_check`: the setting loads with its exact values (and nothing else), and
//! `CompiledPolicy::name_check` says which verdicts need the DNS check: permits because of the
//! name only.

use std::net::IpAddr;
use std::path::Path;

use policy_engine::{compile, load_policy_str, Query, SniDnsCheck, Transport};

fn policy(check: Option<&str>, mode: &str) -> String {
    let line = check.map_or(String::new(), |c| format!("sni_dns_check = \"{c}\"\n"));
    format!(
        r#"
[policy]
default_action = "deny"
mode = "{mode}"
{line}
[smartgroups.prod]
cidrs = ["10.1.0.0/16"]

[webgroups.openai]
domains = ["api.openai.com", "*.openai.com"]

[webgroups.blocked]
domains = ["evil.openai.com"]

[addressgroups.cdn]
cidrs = ["198.51.100.0/24"]

[[rules]]
name = "deny-evil"
priority = 5
src = ["any"]
dst = ["blocked"]
action = "deny"

[[rules]]
name = "openai-or-cdn"
priority = 10
src = ["prod"]
dst = ["openai", "cdn"]
protocol = "tcp"
ports = ["443"]
action = "permit"

[[rules]]
name = "anything-to-cdn"
priority = 20
src = ["any"]
dst = ["cdn"]
action = "permit"
"#
    )
}

fn q<'a>(dst: &str, name: Option<&'a str>) -> Query<'a> {
    Query {
        src: "10.1.2.3".parse::<IpAddr>().unwrap(),
        dst: dst.parse().unwrap(),
        transport: Transport::Tcp,
        dst_port: 443,
        name,
    }
}

fn check(text: &str, dst: &str, name: Option<&str>) -> SniDnsCheck {
    let loaded = load_policy_str(text, Path::new("p.toml")).expect("valid");
    let c = compile(&loaded.policy, 1);
    let query = q(dst, name);
    let v = c.evaluate(&query);
    c.name_check(&query, &v)
}

#[test]
fn loads_the_three_values_and_defaults_to_log() {
    for (value, want) in [
        ("enforce", SniDnsCheck::Enforce),
        ("log", SniDnsCheck::Log),
        ("off", SniDnsCheck::Off),
    ] {
        let l = load_policy_str(&policy(Some(value), "enforce"), Path::new("p.toml")).unwrap();
        assert_eq!(l.policy.sni_dns_check, want);
        assert_eq!(compile(&l.policy, 1).sni_dns_check(), want);
    }
    let l = load_policy_str(&policy(None, "enforce"), Path::new("p.toml")).unwrap();
    assert_eq!(l.policy.sni_dns_check, SniDnsCheck::Log);
}

#[test]
fn refuses_anything_else_with_its_position() {
    for bad in ["\"on\"", "\"Enforce\"", "\"log-only\"", "true", "1"] {
        let text = format!("[policy]\nsni_dns_check = {bad}\n");
        let err = load_policy_str(&text, Path::new("p.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("p.toml:2:"), "{msg}");
        assert!(msg.contains("sni_dns_check"), "{msg}");
    }
}

#[test]
fn only_permits_because_of_the_name_are_checked() {
    let text = policy(Some("enforce"), "enforce");
    // Permitted by the WebGroup, the address in no group of the rule: checked.
    assert_eq!(
        check(&text, "192.0.2.10", Some("api.openai.com")),
        SniDnsCheck::Enforce
    );
    // A wildcard name: checked too (the name sent is what the gateway looks up).
    assert_eq!(
        check(&text, "192.0.2.10", Some("chat.openai.com")),
        SniDnsCheck::Enforce
    );
    // The same rule also names the address's group: the address opened the way.
    assert_eq!(
        check(&text, "198.51.100.7", Some("api.openai.com")),
        SniDnsCheck::Off
    );
    // Denied: nothing to check.
    assert_eq!(
        check(&text, "192.0.2.10", Some("evil.openai.com")),
        SniDnsCheck::Off
    );
    // No name, or a name no rule permits: nothing to check.
    assert_eq!(check(&text, "192.0.2.10", None), SniDnsCheck::Off);
    assert_eq!(
        check(&text, "192.0.2.10", Some("other.example.com")),
        SniDnsCheck::Off
    );
    // Off means off; log-only mode never enforces it.
    assert_eq!(
        check(
            &policy(Some("off"), "enforce"),
            "192.0.2.10",
            Some("api.openai.com")
        ),
        SniDnsCheck::Off
    );
    assert_eq!(
        check(
            &policy(Some("enforce"), "log-only"),
            "192.0.2.10",
            Some("api.openai.com")
        ),
        SniDnsCheck::Log
    );
}
