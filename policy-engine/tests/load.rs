//! Every error and warning of the loader, with its message and position.

use std::path::Path;

use policy_engine::{
    compile, load_policy_file, load_policy_str, Action, DefaultAction, DstGroup, DstSpec, Mode,
    PortRange, Ports, Protocol, QuicMode, Severity, SrcSpec,
};

const GROUPS: &str = r#"
[smartgroups.prod]
cidrs = ["10.1.0.0/16"]

[smartgroups.dev]
cidrs = ["10.2.0.0/16"]

[webgroups.openai]
domains = ["api.openai.com"]

[addressgroups.c2]
cidrs = ["203.0.113.7/32"]
"#;

/// Loads `text` and returns its errors as `LINE:COL: MESSAGE`.
fn errors(text: &str) -> Vec<String> {
    match load_policy_str(text, Path::new("p.toml")) {
        Ok(_) => panic!("expected errors, the policy loaded"),
        Err(e) => {
            assert!(e.errors.iter().all(|d| d.severity == Severity::Error));
            e.errors
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect()
        }
    }
}

fn warnings(text: &str) -> Vec<String> {
    match load_policy_str(text, Path::new("p.toml")) {
        Ok(l) => l
            .warnings
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect(),
        Err(e) => panic!("expected a valid policy, got:\n{e}"),
    }
}

/// The groups above (lines 1-12) followed by `rest`, which starts on line 13.
fn with_groups(rest: &str) -> String {
    format!("{GROUPS}{rest}")
}

#[test]
fn design_example_loads() {
    let text = r#"
[policy]
default_action = "deny"          # deny | permit
mode = "enforce"                 # enforce | log-only

[smartgroups.prod-agents]
cidrs = ["10.1.0.0/16", "10.9.8.7/32", "fd00:1::/64"]
selectors = [
  { tags = { env = "prod", app = "agent" } },
  { k8s = { namespace = "agents", labels = { tier = "prod" } } },
]

[webgroups.openai]
domains = ["api.openai.com", "*.openai.com"]

[addressgroups.c2-blocklist]
cidrs = ["203.0.113.7/32"]

[[rules]]
name = "prod-agents-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443", "8443-8445"]
action = "permit"
log = true
watch = false
"#;
    let loaded = load_policy_str(text, Path::new("p.toml")).expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let p = &loaded.policy;
    assert_eq!(p.default_action, DefaultAction::Deny);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.smartgroups[0].cidrs.len(), 3);
    assert_eq!(p.smartgroups[0].selectors.len(), 2);
    assert_eq!(
        p.smartgroups[0].selectors[1]
            .k8s
            .as_ref()
            .and_then(|k| k.namespace.as_deref()),
        Some("agents")
    );
    let r = &p.rules[0];
    assert_eq!(r.name, "prod-agents-to-openai");
    assert_eq!(r.priority, 100);
    assert_eq!(r.src, SrcSpec::Groups(vec![0]));
    assert_eq!(r.dst, DstSpec::Groups(vec![DstGroup::Web(0)]));
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!(
        r.ports,
        Ports::Ranges(vec![
            PortRange {
                start: 443,
                end: 443
            },
            PortRange {
                start: 8443,
                end: 8445
            }
        ])
    );
    assert_eq!(r.action, Action::Permit);
    assert!(r.log);
    assert!(!r.watch);
    assert_eq!(loaded.rule_locations[0].line, 20);
}

#[test]
fn rules_are_sorted_by_priority_and_defaults_apply() {
    let text = with_groups(
        r#"
[[rules]]
name = "b"
priority = 20
src = "any"
dst = ["c2"]
action = "reject"

[[rules]]
name = "a"
priority = 10
src = ["dev"]
dst = ["openai"]
action = "permit"
"#,
    );
    let loaded = load_policy_str(&text, Path::new("p.toml")).expect("valid");
    let p = &loaded.policy;
    assert_eq!(p.default_action, DefaultAction::Deny);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.rules[0].name, "a");
    assert_eq!(p.rules[1].name, "b");
    assert_eq!(p.rules[1].src, SrcSpec::Any);
    assert_eq!(p.rules[1].protocol, Protocol::Any);
    assert_eq!(p.rules[1].ports, Ports::Any);
    assert!(!p.rules[1].log && !p.rules[1].watch);
    assert_eq!(loaded.rule_locations[0].line, 22);
}

#[test]
fn toml_syntax_errors_have_positions() {
    let e = errors("[policy]\ndefault_action = \"deny\nmode = 1\n");
    assert_eq!(
        e,
        vec!["2:23: invalid TOML: invalid basic string, expected `\"`"]
    );
}

#[test]
fn unknown_keys_everywhere() {
    let text = r#"[policy]
colour = "red"
[smartgroups.a]
cidr = ["10.0.0.0/8"]
[webgroups.w]
domain = ["x.example.com"]
[addressgroups.g]
cidrs = ["10.0.0.0/8"]
nets = 1
[[rules]]
name = "r"
priority = 1
src = ["a"]
dst = ["w"]
action = "permit"
logging = true
[extra]
x = 1
"#;
    assert_eq!(
        errors(text),
        vec![
            "2:1: unknown key `colour` in [policy]; expected default_action, mode, quic, sni_dns_check, include or description",
            "4:1: unknown key `cidr` in smartgroup `a`; expected cidrs, selectors or description",
            "6:1: unknown key `domain` in webgroup `w`; expected domains or description",
            "9:1: unknown key `nets` in addressgroup `g`; expected cidrs or description",
            "16:1: unknown key `logging` in a rule; expected name, priority, src, dst, protocol, ports, action, log, watch or description",
            "17:2: unknown key `extra`; a policy has the sections [policy], [smartgroups.NAME], [webgroups.NAME], [addressgroups.NAME] and [[rules]]",
        ]
    );
}

#[test]
fn invalid_policy_section_values() {
    let text = "[policy]\ndefault_action = \"allow\"\nmode = \"audit\"\ninclude = [1]\n";
    assert_eq!(
        errors(text),
        vec![
            "2:18: invalid default_action `allow`: expected \"deny\" or \"permit\"",
            "3:8: invalid mode `audit`: expected \"enforce\" or \"log-only\"",
            "4:12: `include` must hold strings, not an integer",
        ]
    );
    assert_eq!(
        errors("policy = 3\n"),
        vec!["1:10: [policy] must be a table, not an integer"]
    );
    assert_eq!(
        errors("[policy]\nmode = true\n"),
        vec!["2:8: `mode` must be a string, not a boolean"]
    );
}

#[test]
fn quic_setting() {
    let load = |text: &str| {
        load_policy_str(text, Path::new("p.toml"))
            .expect("loads")
            .policy
            .quic
    };
    assert_eq!(load("[policy]\n"), QuicMode::Inspect, "inspect by default");
    assert_eq!(load("[policy]\nquic = \"inspect\"\n"), QuicMode::Inspect);
    assert_eq!(load("[policy]\nquic = \"block\"\n"), QuicMode::Block);
    assert_eq!(
        compile(
            &load_policy_str("[policy]\nquic = \"block\"\n", Path::new("p.toml"))
                .unwrap()
                .policy,
            1
        )
        .quic(),
        QuicMode::Block
    );
    assert_eq!(
        errors("[policy]\nquic = \"allow\"\n"),
        vec!["2:8: invalid quic `allow`: expected \"inspect\" or \"block\""]
    );
    assert_eq!(
        errors("[policy]\nquic = false\n"),
        vec!["2:8: `quic` must be a string, not a boolean"]
    );
}

#[test]
fn invalid_cidrs() {
    let text = r#"[smartgroups.a]
cidrs = ["10.1.0.1/16", "10.0.0.0/33", "banana", "fd00::1/64", "10.0.0.0/8"]
[addressgroups.b]
cidrs = "10.0.0.0/8"
"#;
    assert_eq!(
        errors(text),
        vec![
            "2:10: CIDR `10.1.0.1/16` has host bits set: did you mean `10.1.0.0/16`?",
            "2:25: invalid CIDR `10.0.0.0/33`: the prefix length is at most 32 for this address family",
            "2:40: invalid CIDR `banana`: expected an address and a prefix length, like 10.0.0.0/8 or fd00::/64",
            "2:50: CIDR `fd00::1/64` has host bits set: did you mean `fd00::/64`?",
        ]
    );
}

#[test]
fn bare_addresses_are_host_routes() {
    let loaded = load_policy_str(
        "[addressgroups.b]\ncidrs = [\"192.0.2.1\", \"2001:db8::1\"]\n",
        Path::new("p.toml"),
    )
    .expect("valid");
    let cidrs: Vec<String> = loaded.policy.addressgroups[0]
        .cidrs
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cidrs, ["192.0.2.1/32", "2001:db8::1/128"]);
}

#[test]
fn invalid_names_and_patterns() {
    let long_label = "a".repeat(64);
    let long_name = vec!["abcdefghi"; 26].join(".");
    let text = format!(
        r#"[webgroups.w]
domains = ["*.com", "*.co.uk", "api*.openai.com", "a..b.com", "{long_label}.com", "{long_name}", "a b.com", "x.*", "-x.example.com", "api.*.com"]
"#
    );
    let col = |needle: &str| text.lines().nth(1).unwrap().find(needle).unwrap() + 1;
    assert_eq!(
        errors(&text),
        vec![
            format!("2:{}: invalid domain pattern `*.com`: the pattern is wider than the public suffix `com`: it would match names of unrelated owners; name a registrable domain (for example `*.example.com`)", col("\"*.com")),
            format!("2:{}: invalid domain pattern `*.co.uk`: the pattern is wider than the public suffix `co.uk`: it would match names of unrelated owners; name a registrable domain (for example `*.example.co.uk`)", col("\"*.co.uk")),
            format!("2:{}: invalid domain pattern `api*.openai.com`: `*` must be a whole label (as in `*.example.com` or `api.*.example.com`), not part of one (`api*`)", col("\"api*")),
            format!("2:{}: invalid domain pattern `a..b.com`: the name has an empty label (a leading dot or two dots in a row)", col("\"a..b")),
            format!("2:{}: invalid domain pattern `{long_label}.com`: the label `{long_label}` is 64 characters long; at most 63 are allowed", col("\"aaaa")),
            // Input quoted in a message is cut to 80 characters.
            format!("2:{}: invalid domain pattern `{}… (259 bytes)`: the name is 259 characters long; at most 253 are allowed", col("\"abcdefghi"), &long_name[..80]),
            format!("2:{}: invalid domain pattern `a b.com`: invalid character ' ': names may contain letters, digits, `-` and `_`", col("\"a b")),
            format!("2:{}: invalid domain pattern `x.*`: a pattern must end with fixed labels: `*` cannot be the last label", col("\"x.*")),
            format!("2:{}: invalid domain pattern `-x.example.com`: the label `-x` starts or ends with `-`", col("\"-x")),
            format!("2:{}: invalid domain pattern `api.*.com`: the pattern is wider than the public suffix `com`: it would match names of unrelated owners; name a registrable domain (for example `*.example.com`)", col("\"api.*")),
        ]
    );
}

#[test]
fn patterns_are_normalised() {
    let loaded = load_policy_str(
        "[webgroups.w]\ndomains = [\"API.OpenAI.com.\", \"*.Bücher.example\", \"bedrock-runtime.*.Cloud.Example\"]\n",
        Path::new("p.toml"),
    )
    .expect("valid");
    let p: Vec<&str> = loaded.policy.webgroups[0]
        .patterns
        .iter()
        .map(|p| p.as_str())
        .collect();
    assert_eq!(
        p,
        [
            "api.openai.com",
            "*.xn--bcher-kva.example",
            "bedrock-runtime.*.cloud.example"
        ]
    );
}

#[test]
fn invalid_group_names_and_duplicates() {
    let text = r#"[smartgroups.any]
cidrs = ["10.0.0.0/8"]
[smartgroups."a b"]
cidrs = ["10.0.0.0/8"]
[webgroups.dup]
domains = ["x.example.com"]
[addressgroups.dup]
cidrs = ["10.0.0.0/8"]
"#;
    assert_eq!(
        errors(text),
        vec![
            "1:14: invalid smartgroup name: `any` is reserved and cannot be used as a name",
            "3:14: invalid smartgroup name: invalid character ' ' in the name `a b`: names may contain ASCII letters, digits, `-`, `_` and `.`",
            "7:16: `dup` is already defined as a webgroup at p.toml:5:12; group names must be unique across smartgroups, webgroups and addressgroups",
        ]
    );
}

#[test]
fn duplicate_table_is_a_toml_error() {
    let e = errors("[smartgroups.a]\ncidrs = []\n[smartgroups.a]\ncidrs = []\n");
    assert_eq!(
        e,
        vec![
            "3:14: invalid TOML: duplicate key (it is already defined above)",
            "4:1: invalid TOML: duplicate key (it is already defined above)"
        ]
    );
}

#[test]
fn invalid_selectors() {
    let text = r#"[smartgroups.a]
cidrs = ["10.0.0.0/8"]
selectors = [ {}, { tag = { a = "b" } }, { tags = { a = 1 } }, { k8s = { ns = "x" } } ]
"#;
    assert_eq!(
        errors(text),
        vec![
            "3:15: a selector needs `tags` or `k8s`; an empty selector would select every workload",
            "3:21: unknown key `tag` in a selector; expected tags or k8s",
            "3:19: a selector needs `tags` or `k8s`; an empty selector would select every workload",
            "3:57: `tags.a` must be a string, not an integer",
            "3:74: unknown key `ns` in a k8s selector; expected namespace or labels",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
        .tap_sort()
    );
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort_by_key(|s| {
            let mut it = s.split(':');
            let line: usize = it.next().unwrap().parse().unwrap();
            let col: usize = it.next().unwrap().parse().unwrap();
            (line, col)
        });
        self
    }
}

#[test]
fn rule_missing_keys_point_at_the_header() {
    let text = with_groups(
        r#"
[[rules]]
protocol = "tcp"
"#,
    );
    assert_eq!(
        errors(&text),
        vec![
            "14:1: this rule has no `name`; every rule needs name, priority, src, dst and action",
            "14:1: this rule has no `priority`; every rule needs name, priority, src, dst and action",
            "14:1: this rule has no `src`; every rule needs name, priority, src, dst and action",
            "14:1: this rule has no `dst`; every rule needs name, priority, src, dst and action",
            "14:1: this rule has no `action`; every rule needs name, priority, src, dst and action",
        ]
    );
}

#[test]
fn rule_value_errors() {
    let text = with_groups(
        r#"
[[rules]]
name = "bad name"
priority = -1
src = []
dst = []
protocol = "icmp"
action = "allow"
log = "yes"
watch = 1
"#,
    );
    assert_eq!(
        errors(&text),
        vec![
            "15:8: invalid rule name: invalid character ' ' in the name `bad name`: names may contain ASCII letters, digits, `-`, `_` and `.`",
            "16:12: priority -1 is out of range: use an integer from 0 to 4294967295",
            "17:7: `src` is empty; use [\"any\"] to match every source",
            "18:7: `dst` is empty; use [\"any\"] to match every destination",
            "19:12: invalid protocol `icmp`: expected \"tcp\", \"udp\" or \"any\"",
            "20:10: invalid action `allow`: expected \"permit\", \"deny\" or \"reject\"",
            "21:7: `log` must be true or false, not a string",
            "22:9: `watch` must be true or false, not an integer",
        ]
    );
    let text = with_groups(
        "\n[[rules]]\nname = \"r\"\npriority = \"high\"\nsrc = \"any\"\ndst = \"any\"\naction = \"deny\"\n",
    );
    assert_eq!(
        errors(&text),
        vec!["16:12: `priority` must be an integer, not a string"]
    );
    let text = with_groups(
        "\n[[rules]]\nname = \"r\"\npriority = 4294967296\nsrc = \"any\"\ndst = \"any\"\naction = \"deny\"\n",
    );
    assert_eq!(
        errors(&text),
        vec!["16:12: priority 4294967296 is out of range: use an integer from 0 to 4294967295"]
    );
}

#[test]
fn port_errors() {
    let text = with_groups(
        r#"
[[rules]]
name = "r"
priority = 1
src = "any"
dst = "any"
ports = ["0", "65536", "9-8", "http", 70000, 1.5, "1-"]
action = "deny"

[[rules]]
name = "s"
priority = 2
src = "any"
dst = "any"
ports = []
action = "deny"

[[rules]]
name = "t"
priority = 3
src = "any"
dst = "any"
ports = true
action = "deny"
"#,
    );
    assert_eq!(
        errors(&text),
        vec![
            "19:10: port 0 is not a valid destination port: use 1 to 65535",
            "19:15: port 65536 is out of range: use 1 to 65535",
            "19:24: port range `9-8` is reversed: write `8-9`",
            "19:31: invalid port `http`: expected a number from 1 to 65535 or a range like \"8443-8445\"",
            "19:39: port 70000 is out of range: use 1 to 65535",
            "19:46: a port must be a number or a string like \"443\" or \"8443-8445\", not a float",
            "19:51: invalid port ``: expected a number from 1 to 65535 or a range like \"8443-8445\"",
            "27:9: `ports` is empty; leave it out to match any port",
            "35:9: `ports` must be an array of ports and ranges, like [\"443\", \"8443-8445\"], not a boolean",
        ]
    );
}

#[test]
fn ports_are_merged() {
    let text = with_groups(
        "\n[[rules]]\nname = \"r\"\npriority = 1\nsrc = \"any\"\ndst = \"any\"\nports = [443, \"440-444\", \"445\", \"8443-8445\"]\naction = \"deny\"\n",
    );
    let loaded = load_policy_str(&text, Path::new("p.toml")).expect("valid");
    assert_eq!(
        loaded.policy.rules[0].ports,
        Ports::Ranges(vec![
            PortRange {
                start: 440,
                end: 445
            },
            PortRange {
                start: 8443,
                end: 8445
            }
        ])
    );
}

#[test]
fn reference_errors() {
    let text = with_groups(
        r#"
[[rules]]
name = "r1"
priority = 1
src = ["nope", "openai", "c2"]
dst = ["missing", "prod", "c2", "openai"]
action = "deny"

[[rules]]
name = "r2"
priority = 2
src = ["any", "prod"]
dst = ["any", "c2"]
action = "deny"
"#,
    );
    assert_eq!(
        errors(&text),
        vec![
            "17:8: unknown smartgroup `nope` in `src`: no [smartgroups.nope] is defined",
            "17:16: `openai` is a webgroup (defined at p.toml:8:12); `src` accepts only smartgroups or \"any\"",
            "17:26: `c2` is an addressgroup (defined at p.toml:11:16); `src` accepts only smartgroups or \"any\"",
            "18:8: unknown group `missing` in `dst`: no webgroup, addressgroup or smartgroup has this name",
            "24:8: \"any\" cannot be combined with other names in `src`: it already matches everything",
            "25:8: \"any\" cannot be combined with other names in `dst`: it already matches everything",
        ]
    );
}

#[test]
fn duplicate_rule_names_and_priorities() {
    let text = with_groups(
        r#"
[[rules]]
name = "r"
priority = 1
src = "any"
dst = ["c2"]
action = "deny"

[[rules]]
name = "r"
priority = 2
src = "any"
dst = ["openai"]
action = "deny"

[[rules]]
name = "s"
priority = 1
src = "any"
dst = ["openai"]
action = "deny"
"#,
    );
    assert_eq!(
        errors(&text),
        vec![
            "22:8: rule `r` is already defined at p.toml:15:8; rule names must be unique",
            "30:12: priority 1 is already used by rule `r` at p.toml:15:8; every rule needs its own priority so that the order is unambiguous",
        ]
    );
}

#[test]
fn group_warnings() {
    let text = r#"[smartgroups.empty]
[smartgroups.selected]
selectors = [ { tags = { env = "prod" } } ]
[webgroups.nothing]
description = "to be filled"
[addressgroups.feed]
description = "empty feed"
[webgroups.none]
domains = []
[addressgroups.nofeed]
cidrs = []
"#;
    assert_eq!(
        warnings(text),
        vec![
            "1:14: smartgroup `empty` has neither cidrs nor selectors: it matches nothing",
            "2:14: smartgroup `selected` has no cidrs: its selectors are resolved by the controller; enforced from this file alone it matches nothing",
            "4:12: webgroup `nothing` has no domains: it matches nothing",
            "6:16: addressgroup `feed` has no cidrs: it matches nothing",
            "8:12: webgroup `none` has no domains: it matches nothing",
            "10:16: addressgroup `nofeed` has no cidrs: it matches nothing",
        ]
    );
}

#[test]
fn shadowed_rules_are_warned_about() {
    let text = with_groups(
        r#"
[[rules]]
name = "watch-all"
priority = 1
src = "any"
dst = "any"
action = "deny"
watch = true

[[rules]]
name = "prod-web"
priority = 10
src = ["prod", "dev"]
dst = ["openai", "c2"]
protocol = "tcp"
ports = ["443", "8000-9000"]
action = "permit"

[[rules]]
name = "prod-only"
priority = 20
src = ["prod"]
dst = ["openai"]
protocol = "tcp"
ports = ["8443-8445"]
action = "deny"

[[rules]]
name = "prod-udp"
priority = 30
src = ["prod"]
dst = ["openai"]
protocol = "udp"
ports = ["443"]
action = "deny"

[[rules]]
name = "prod-any-port"
priority = 40
src = ["prod"]
dst = ["openai"]
protocol = "tcp"
action = "deny"

[[rules]]
name = "catch-all"
priority = 50
src = "any"
dst = "any"
action = "deny"

[[rules]]
name = "after-catch-all"
priority = 60
src = ["dev"]
dst = ["c2"]
action = "permit"
"#,
    );
    assert_eq!(
        warnings(&text),
        vec![
            "32:8: rule `prod-only` (priority 20) can never match: rule `prod-web` (priority 10, at p.toml:23:8) comes first and matches all of its traffic",
            "65:8: rule `after-catch-all` (priority 60) can never match: rule `catch-all` (priority 50, at p.toml:58:8) comes first and matches all of its traffic",
        ]
    );
}

#[test]
fn shadowing_by_any_protocol_needs_ports_any() {
    // A rule with ports does not cover a port-less rule (which also matches ICMP).
    let text = with_groups(
        r#"
[[rules]]
name = "a"
priority = 1
src = "any"
dst = "any"
ports = ["1-65535"]
action = "deny"

[[rules]]
name = "b"
priority = 2
src = "any"
dst = "any"
action = "permit"

[[rules]]
name = "c"
priority = 3
src = "any"
dst = "any"
protocol = "udp"
ports = ["53"]
action = "permit"
"#,
    );
    assert_eq!(
        warnings(&text),
        vec![
            "30:8: rule `c` (priority 3) can never match: rule `a` (priority 1, at p.toml:15:8) comes first and matches all of its traffic",
        ]
    );
}

#[test]
fn includes_are_resolved_relative_to_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("webgroups")).expect("mkdir");
    std::fs::write(
        dir.path().join("webgroups/ai.toml"),
        "version = 2\ndescription = \"AI\"\n[webgroups.openai]\ndomains = [\"api.openai.com\"]\n[addressgroups.feed]\ncidrs = [\"192.0.2.0/24\"]\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("policy.toml"),
        "[policy]\ninclude = [\"webgroups/ai.toml\"]\n[[rules]]\nname = \"r\"\npriority = 1\nsrc = \"any\"\ndst = [\"openai\", \"feed\"]\naction = \"permit\"\n",
    )
    .expect("write");
    let loaded = load_policy_file(&dir.path().join("policy.toml")).expect("valid");
    assert_eq!(loaded.policy.webgroups[0].name, "openai");
    assert_eq!(loaded.policy.addressgroups[0].name, "feed");
    assert_eq!(loaded.files.len(), 2);
}

#[test]
fn include_errors_name_the_right_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cat.toml"),
        "version = 1.5\n[webgroups.w]\ndomains = [\"*.com\"]\n[smartgroups.s]\ncidrs = []\n[policy]\ninclude = []\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("policy.toml"),
        "[policy]\ninclude = [\"cat.toml\", \"missing.toml\", \"cat.toml\"]\n",
    )
    .expect("write");
    let err = load_policy_file(&dir.path().join("policy.toml")).expect_err("invalid");
    let cat = dir.path().join("cat.toml");
    let pol = dir.path().join("policy.toml");
    let got: Vec<String> = err.errors.iter().map(|d| d.to_string()).collect();
    let missing = dir.path().join("missing.toml");
    assert_eq!(got.len(), 6, "{got:#?}");
    assert!(got[0].starts_with(&format!(
        "{}:2:24: error: cannot include `{}`: cannot read the file:",
        pol.display(),
        missing.display()
    )));
    assert_eq!(
        got[1],
        format!(
            "{}:2:40: error: `cat.toml` is included more than once",
            pol.display()
        )
    );
    assert_eq!(
        got[2],
        format!(
            "{}:1:11: error: `version` must be an integer or a string, not a float",
            cat.display()
        )
    );
    assert!(got[3].starts_with(&format!(
        "{}:3:12: error: invalid domain pattern `*.com`",
        cat.display()
    )));
    assert_eq!(got[4], format!("{}:4:2: error: unknown key `smartgroups` in an included catalog; a catalog has version, description, [webgroups.NAME] and [addressgroups.NAME]", cat.display()));
    assert!(got[5].starts_with(&format!(
        "{}:6:2: error: unknown key `policy` in an included catalog",
        cat.display()
    )));
}

#[test]
fn unreadable_file_is_an_error() {
    let err = load_policy_file(Path::new("/nonexistent/policy.toml")).expect_err("missing");
    assert_eq!(err.errors.len(), 1);
    assert!(err.errors[0]
        .to_string()
        .starts_with("/nonexistent/policy.toml:1:1: error: cannot read the file:"));
}

#[test]
fn display_of_load_error_lists_every_error() {
    let err = load_policy_str(
        "[policy]\nmode = 1\ndefault_action = 2\n",
        Path::new("x.toml"),
    )
    .expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "x.toml:2:8: error: `mode` must be a string, not an integer\nx.toml:3:18: error: `default_action` must be a string, not an integer"
    );
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = include_str!("data/valid.toml");

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any text: an error or a policy, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = load_policy_str(&text, Path::new("fuzz.toml"));
        }

        /// A valid policy with bytes replaced, inserted or removed: never a panic, and every
        /// error has a position inside the text.
        #[test]
        fn mutated_policy_never_panics(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6)
        ) {
            let mut text: Vec<char> = VALID.chars().collect();
            for (at, op, c) in edits {
                if text.is_empty() {
                    break;
                }
                let i = at.index(text.len());
                match op {
                    0 => text[i] = c,
                    1 => text.insert(i, c),
                    _ => {
                        text.remove(i);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            let lines = text.lines().count().max(1);
            match load_policy_str(&text, Path::new("fuzz.toml")) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert!(!e.errors.is_empty());
                    for d in &e.errors {
                        prop_assert!(d.line >= 1 && d.line <= lines + 1, "{d}");
                        prop_assert!(d.column >= 1, "{d}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_valid_sample_is_valid() {
        let loaded = load_policy_str(VALID, Path::new("valid.toml")).expect("valid");
        assert_eq!(loaded.policy.rules.len(), 3);
    }
}

/// Runs a load on its own thread; fails if it has not returned within 5 s (a blocking open of a
/// FIFO without a writer never returns).
fn load_within_5s(
    path: std::path::PathBuf,
) -> Result<policy_engine::LoadedPolicy, policy_engine::LoadError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load_policy_file(&path));
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("the load blocked")
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", path.display());
}

#[test]
fn special_files_are_refused_as_policies_and_includes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The policy path itself: a FIFO, a directory.
    let fifo = dir.path().join("policy-fifo.toml");
    mkfifo(&fifo);
    let err = load_within_5s(fifo.clone()).expect_err("a FIFO is refused");
    assert_eq!(err.errors.len(), 1);
    assert!(
        err.errors[0]
            .message
            .starts_with("cannot read the file: not a regular file (a FIFO"),
        "{}",
        err.errors[0]
    );
    let err = load_within_5s(dir.path().to_path_buf()).expect_err("a directory is refused");
    assert!(
        err.errors[0].message.contains("a directory"),
        "{}",
        err.errors[0]
    );
    // Includes: a FIFO and a directory, each reported at its own entry, the rest still checked.
    std::fs::create_dir(dir.path().join("catalogs")).expect("mkdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[policy]\ninclude = [\"policy-fifo.toml\", \"catalogs\"]\n",
    )
    .expect("write");
    let err = load_within_5s(policy.clone()).expect_err("invalid");
    let got: Vec<String> = err.errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with(&format!(
            "{}:2:12: error: cannot include `",
            policy.display()
        )) && got[0].contains("not a regular file (a FIFO"),
        "{}",
        got[0]
    );
    assert!(
        got[1].starts_with(&format!(
            "{}:2:32: error: cannot include `",
            policy.display()
        )) && got[1].contains("a directory"),
        "{}",
        got[1]
    );
}
