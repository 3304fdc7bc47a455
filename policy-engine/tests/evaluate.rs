//! Verdicts of the compiled table on a small, readable policy: precedence, watch rules,
//! log-only mode, the SYN-time question, IPv6, ports and transports, groups reported.

use std::path::Path;

use policy_engine::{
    compile, load_policy_str, Action, CompiledPolicy, PolicyStore, Query, RuleRef, SynDecision,
    Transport, Verdict,
};

const POLICY: &str = r#"
[policy]
default_action = "deny"

[smartgroups.prod]
cidrs = ["10.1.0.0/16", "fd00:1::/64"]

[smartgroups.dev]
cidrs = ["10.2.0.0/16", "10.1.200.0/24"]

[smartgroups.db]
cidrs = ["10.9.0.0/24"]

[webgroups.openai]
domains = ["api.openai.com", "*.openai.com"]

[webgroups.bedrock]
domains = ["bedrock-runtime.*.cloud.example"]

[webgroups.github]
domains = ["api.github.com"]

[addressgroups.c2]
cidrs = ["203.0.113.0/24", "2001:db8:bad::/48"]

[[rules]]
name = "block-c2"
priority = 1
src = "any"
dst = ["c2"]
action = "reject"

[[rules]]
name = "watch-dev-github"
priority = 5
src = ["dev"]
dst = ["github"]
action = "deny"
watch = true

[[rules]]
name = "prod-bedrock"
priority = 10
src = ["prod"]
dst = ["bedrock"]
protocol = "tcp"
ports = ["443"]
action = "permit"

[[rules]]
name = "dev-ai"
priority = 20
src = ["dev"]
dst = ["openai", "bedrock", "github"]
protocol = "tcp"
ports = ["443"]
action = "permit"
log = true

[[rules]]
name = "prod-db"
priority = 30
src = ["prod"]
dst = ["db"]
protocol = "tcp"
ports = ["5432"]
action = "permit"

[[rules]]
name = "dns"
priority = 40
src = "any"
dst = "any"
protocol = "udp"
ports = ["53"]
action = "permit"
"#;

fn compiled(text: &str) -> CompiledPolicy {
    let loaded = load_policy_str(text, Path::new("p.toml")).expect("valid policy");
    compile(&loaded.policy, 1)
}

fn q<'a>(
    src: &str,
    dst: &str,
    transport: Transport,
    port: u16,
    name: Option<&'a str>,
) -> Query<'a> {
    Query {
        src: src.parse().expect("src"),
        dst: dst.parse().expect("dst"),
        transport,
        dst_port: port,
        name,
    }
}

fn rule(c: &CompiledPolicy, v: &Verdict) -> String {
    c.rule_name(v.rule).to_owned()
}

#[test]
fn first_match_by_name_and_port() {
    let c = compiled(POLICY);
    let v = c.evaluate(&q(
        "10.1.2.3",
        "52.1.1.1",
        Transport::Tcp,
        443,
        Some("bedrock-runtime.us-east-1.cloud.example"),
    ));
    assert_eq!(
        (v.action, rule(&c, &v).as_str(), v.enforced),
        (Action::Permit, "prod-bedrock", true)
    );
    assert!(!v.log, "permits are logged only with log = true");
    assert_eq!(c.src_groups(&v).collect::<Vec<_>>(), ["prod"]);
    assert_eq!(c.dst_groups(&v).collect::<Vec<_>>(), ["bedrock"]);
    // Wrong port, wrong transport, other provider: default deny.
    for query in [
        q(
            "10.1.2.3",
            "52.1.1.1",
            Transport::Tcp,
            8443,
            Some("bedrock-runtime.us-east-1.cloud.example"),
        ),
        q(
            "10.1.2.3",
            "52.1.1.1",
            Transport::Udp,
            443,
            Some("bedrock-runtime.us-east-1.cloud.example"),
        ),
        q(
            "10.1.2.3",
            "52.1.1.1",
            Transport::Tcp,
            443,
            Some("api.openai.com"),
        ),
        q(
            "10.1.2.3",
            "52.1.1.1",
            Transport::Tcp,
            443,
            Some("bedrock-runtime.a.b.cloud.example"),
        ),
        q("10.1.2.3", "52.1.1.1", Transport::Tcp, 443, None),
    ] {
        let v = c.evaluate(&query);
        assert_eq!(
            (v.action, v.rule, v.log),
            (Action::Deny, RuleRef::Default, true),
            "{query:?}"
        );
    }
}

#[test]
fn address_rules_come_first_whatever_the_name() {
    let c = compiled(POLICY);
    let v = c.evaluate(&q(
        "10.1.2.3",
        "203.0.113.9",
        Transport::Tcp,
        443,
        Some("api.openai.com"),
    ));
    assert_eq!(
        (v.action, rule(&c, &v).as_str()),
        (Action::Reject, "block-c2")
    );
    assert_eq!(c.dst_groups(&v).collect::<Vec<_>>(), ["openai", "c2"]);
    let v = c.evaluate(&q(
        "fd00:1::5",
        "2001:db8:bad:1::1",
        Transport::Other(58),
        0,
        None,
    ));
    assert_eq!(
        (v.action, rule(&c, &v).as_str()),
        (Action::Reject, "block-c2")
    );
    assert_eq!(c.src_groups(&v).collect::<Vec<_>>(), ["prod"]);
}

#[test]
fn overlapping_smartgroups() {
    let c = compiled(POLICY);
    // 10.1.200.7 is in prod (10.1.0.0/16) and in dev (10.1.200.0/24).
    let v = c.evaluate(&q(
        "10.1.200.7",
        "52.1.1.1",
        Transport::Tcp,
        443,
        Some("chat.openai.com"),
    ));
    assert_eq!(rule(&c, &v), "dev-ai");
    assert!(v.log);
    let mut groups: Vec<_> = c.src_groups(&v).collect();
    groups.sort_unstable();
    assert_eq!(groups, ["dev", "prod"]);
}

#[test]
fn watch_rule_reports_and_the_next_rule_enforces() {
    let c = compiled(POLICY);
    let v = c.evaluate(&q(
        "10.2.0.1",
        "140.82.112.6",
        Transport::Tcp,
        443,
        Some("api.github.com"),
    ));
    assert_eq!(v.action, Action::Deny);
    assert!(!v.enforced);
    assert_eq!(rule(&c, &v), "watch-dev-github");
    assert_eq!(v.effective_action, Action::Permit);
    assert_eq!(c.rule_name(v.effective_rule), "dev-ai");
    assert!(v.log, "watch rules are always logged");
    // The watch rule matches ports the enforcing rule does not: the default enforces.
    let v = c.evaluate(&q(
        "10.2.0.1",
        "140.82.112.6",
        Transport::Tcp,
        22,
        Some("api.github.com"),
    ));
    assert_eq!((v.action, v.enforced), (Action::Deny, false));
    assert_eq!(
        (v.effective_action, v.effective_rule),
        (Action::Deny, RuleRef::Default)
    );
}

#[test]
fn log_only_mode_forwards_everything_and_logs() {
    let c = compiled(&POLICY.replace(
        "default_action = \"deny\"",
        "default_action = \"deny\"\nmode = \"log-only\"",
    ));
    let v = c.evaluate(&q("10.1.2.3", "203.0.113.9", Transport::Tcp, 443, None));
    assert_eq!(
        (v.action, v.enforced, v.effective_action),
        (Action::Reject, false, Action::Permit)
    );
    assert_eq!(c.rule_name(v.effective_rule), "block-c2");
    assert!(v.log);
    let v = c.evaluate(&q(
        "10.1.2.3",
        "52.1.1.1",
        Transport::Tcp,
        443,
        Some("bedrock-runtime.eu-west-1.cloud.example"),
    ));
    assert_eq!(
        (v.action, v.enforced, v.effective_action, v.log),
        (Action::Permit, false, Action::Permit, true)
    );
}

#[test]
fn default_permit() {
    let c = compiled(&POLICY.replace("default_action = \"deny\"", "default_action = \"permit\""));
    let v = c.evaluate(&q("192.0.2.1", "198.51.100.1", Transport::Tcp, 80, None));
    assert_eq!(
        (v.action, v.rule, v.enforced, v.log),
        (Action::Permit, RuleRef::Default, true, true)
    );
}

#[test]
fn syn_decisions() {
    let c = compiled(POLICY);
    // The C2 block does not depend on the name.
    let v = c.evaluate_without_name(&q("10.1.2.3", "203.0.113.9", Transport::Tcp, 443, None));
    assert!(matches!(v, SynDecision::Final(v) if v.action == Action::Reject));
    // prod on 443: the bedrock rule depends on the name.
    assert_eq!(
        c.evaluate_without_name(&q("10.1.2.3", "52.1.1.1", Transport::Tcp, 443, None)),
        SynDecision::NeedsName
    );
    // prod on 5432 to the db: no name-based rule can match that port first.
    match c.evaluate_without_name(&q("10.1.2.3", "10.9.0.5", Transport::Tcp, 5432, None)) {
        SynDecision::Final(v) => assert_eq!(c.rule_name(v.rule), "prod-db"),
        other => panic!("{other:?}"),
    }
    // An unknown source has no name-based rule at all: denied on the SYN.
    match c.evaluate_without_name(&q("192.0.2.1", "52.1.1.1", Transport::Tcp, 443, None)) {
        SynDecision::Final(v) => assert_eq!((v.action, v.rule), (Action::Deny, RuleRef::Default)),
        other => panic!("{other:?}"),
    }
    // DNS over UDP is decided by address...
    match c.evaluate_without_name(&q("10.1.2.3", "10.0.0.2", Transport::Udp, 53, None)) {
        SynDecision::Final(v) => assert_eq!(c.rule_name(v.rule), "dns"),
        other => panic!("{other:?}"),
    }
    // ...except for dev, whose name-based watch rule (any protocol, any port) comes first.
    assert_eq!(
        c.evaluate_without_name(&q("10.2.0.1", "10.0.0.2", Transport::Udp, 53, None)),
        SynDecision::NeedsName
    );
}

#[test]
fn names_that_are_not_normal_never_match() {
    let c = compiled(POLICY);
    // Some of these would match `*.openai.com` if only their right-hand labels were looked at.
    for name in [
        "API.OPENAI.COM",
        "api.openai.com.",
        "",
        ".",
        "a..openai.com",
        ".api.openai.com",
        "X.api.openai.com",
        "a b.api.openai.com",
        "caf\u{e9}.api.openai.com",
        "api.openai.com..",
        // Through the single-label `*` of `bedrock-runtime.*.cloud.example`.
        "bedrock-runtime.US-EAST-1.cloud.example",
        "bedrock-runtime..cloud.example",
        "Bedrock-runtime.us-east-1.cloud.example",
        "x.bedrock-runtime.us-east-1.cloud.example.",
    ] {
        let v = c.evaluate(&q("10.2.0.1", "52.1.1.1", Transport::Tcp, 443, Some(name)));
        assert_eq!(v.rule, RuleRef::Default, "{name:?}");
    }
    let long = format!("{}.openai.com", "a.".repeat(200));
    let v = c.evaluate(&q("10.2.0.1", "52.1.1.1", Transport::Tcp, 443, Some(&long)));
    assert_eq!(v.rule, RuleRef::Default);
}

#[test]
fn store_publishes_new_policies() {
    let store = PolicyStore::new(CompiledPolicy::deny_all(1));
    let query = q(
        "10.1.2.3",
        "52.1.1.1",
        Transport::Tcp,
        443,
        Some("bedrock-runtime.us-east-1.cloud.example"),
    );
    assert_eq!(store.load().evaluate(&query).action, Action::Deny);
    let loaded = load_policy_str(POLICY, Path::new("p.toml")).expect("valid");
    let old = store.store(compile(&loaded.policy, 2));
    assert_eq!(old.version(), 1);
    assert_eq!(store.version(), 2);
    assert_eq!(store.load().evaluate(&query).action, Action::Permit);
}

#[test]
fn long_labels_and_wildcards() {
    let long = "a-label-longer-than-twenty-two-bytes-for-the-trie";
    let c = compiled(&format!(
        r#"
[smartgroups.all]
cidrs = ["0.0.0.0/0", "::/0"]

[webgroups.long]
domains = ["{long}.example.com", "*.{long}.example.net", "x.*.{long}.example.org"]

[[rules]]
name = "long"
priority = 1
src = ["all"]
dst = ["long"]
action = "permit"
"#
    ));
    for (name, hit) in [
        (format!("{long}.example.com"), true),
        (format!("{long}x.example.com"), false),
        (format!("a.b.{long}.example.net"), true),
        (format!("{long}.example.net"), false),
        (format!("x.y.{long}.example.org"), true),
        (format!("x.y.z.{long}.example.org"), false),
    ] {
        let v = c.evaluate(&q(
            "192.0.2.1",
            "198.51.100.1",
            Transport::Tcp,
            443,
            Some(&name),
        ));
        assert_eq!(v.rule == RuleRef::Rule(0), hit, "{name}");
    }
}

/// A name that reaches more pattern nodes than a verdict reports is still decided on all of
/// them: here the first rule matches only through the last node the walk reaches.
#[test]
fn names_reaching_many_pattern_nodes_are_decided_on_all() {
    let labels = ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let mut text = String::from("[smartgroups.all]\ncidrs = [\"10.0.0.0/8\"]\n\n");
    // Group i holds `*.<labels[i..]>.example.com`: node i + 1 of the walk below example.com.
    for i in 0..labels.len() {
        let suffix = labels[i..].join(".");
        text.push_str(&format!(
            "[webgroups.w{i}]\ndomains = [\"*.{suffix}.example.com\"]\n\n"
        ));
    }
    // Rule order: the deepest pattern's group first (reached last); the others deny after it.
    for i in 0..labels.len() {
        let action = if i == 0 { "permit" } else { "deny" };
        text.push_str(&format!(
            "[[rules]]\nname = \"r{i}\"\npriority = {}\nsrc = [\"all\"]\ndst = [\"w{i}\"]\naction = \"{action}\"\n\n",
            i + 1
        ));
    }
    let c = compiled(&text);
    let name = format!("a.{}.example.com", labels.join("."));
    let v = c.evaluate(&q(
        "10.1.2.3",
        "192.0.2.1",
        Transport::Tcp,
        443,
        Some(&name),
    ));
    assert_eq!(c.rule_name(v.rule), "r0");
    assert_eq!(v.action, Action::Permit);
    assert!(!v.dst_groups_complete());
}
