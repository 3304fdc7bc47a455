//! Hostile and very large input: addresses that other tools read differently, networks that
//! could never match, messages that quote input, files with millions of errors, and policies
//! whose checks must stay near-linear.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use policy_engine::{
    load::parse_cidr, load_policy_str, shadowed_rules, LoadError, Severity, MAX_REPORTED_ERRORS,
    MAX_REPORTED_WARNINGS,
};

fn load_err(text: &str) -> LoadError {
    load_policy_str(text, Path::new("p.toml")).expect_err("the policy must not load")
}

/// A generous bound for work that is linear: ample on a busy machine in a debug build, far
/// below what the quadratic versions took.
const LINEAR_BOUND: Duration = Duration::from_secs(30);

#[test]
fn leading_zeros_are_refused_not_read_as_decimal() {
    for text in [
        "010.0.0.0/8",
        "10.0.0.010/32",
        "10.0.0.0/08",
        "192.168.001.0/24",
        "::ffff:010.0.0.1",
        "10.0.0.0/+8",
        "10.0.0.0/",
    ] {
        assert!(parse_cidr(text).is_err(), "{text} must be refused");
    }
    let message = parse_cidr("010.0.0.0/8").unwrap_err();
    assert!(message.contains("leading zero"), "{message}");
    // Zero itself is a number, not a leading zero.
    assert_eq!(parse_cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
    assert_eq!(
        parse_cidr("2001:db8::1").unwrap().to_string(),
        "2001:db8::1/128"
    );
}

#[test]
fn ipv4_mapped_networks_are_refused_with_the_ipv4_form() {
    for (text, ipv4) in [
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:a00:0/104", "10.0.0.0/8"),
        ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
    ] {
        let message = parse_cidr(text).unwrap_err();
        assert!(
            message.contains("IPv4-mapped") && message.contains(&format!("write `{ipv4}`")),
            "{text}: {message}"
        );
    }
    // Wider IPv6 networks contain the mapped range among much else: they are real IPv6.
    assert!(parse_cidr("::/0").is_ok());
    assert!(parse_cidr("::/64").is_ok());
    // The loader reports it where it was written.
    let err = load_err("[addressgroups.a]\ncidrs = [\"::ffff:192.0.2.0/120\"]\n");
    assert_eq!((err.errors[0].line, err.errors[0].column), (2, 10));
    assert!(err.errors[0].message.contains("write `192.0.2.0/24`"));
}

#[test]
fn quoted_input_is_bounded_and_escaped() {
    let long = "k".repeat(100_000);
    let text = format!(
        "[policy]\n\"a\\nb\\u001b[2J\" = 1\n{long} = 2\nmode = \"x\\ny\"\n[smartgroups.\"g\\nh\"]\ncidrs = [\"{long}\"]\n"
    );
    let err = load_err(&text);
    assert!(err.errors.len() >= 4, "{err}");
    for e in &err.errors {
        let shown = e.to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown:?}"
        );
        assert!(shown.len() < 600, "{} bytes: {shown:.200}", shown.len());
    }
    let all = err.to_string();
    assert!(all.contains(r"a\nb\u{1b}[2J"), "{all}");
    assert!(all.contains("… (100000 bytes)"), "{all}");
    assert_eq!(all.lines().count(), err.errors.len());
}

#[test]
fn errors_are_capped_with_a_count_of_the_rest() {
    // 20 000 errors of the walk (not of the TOML syntax).
    let mut text = String::from("[policy]\n");
    for i in 0..20_000 {
        writeln!(text, "bad{i} = 1").unwrap();
    }
    let err = load_err(&text);
    assert_eq!(err.errors.len(), MAX_REPORTED_ERRORS + 1);
    let last = err.errors.last().unwrap();
    assert_eq!(last.severity, Severity::Error);
    assert_eq!(
        last.message,
        format!("and 19900 more errors (only the first {MAX_REPORTED_ERRORS} are reported)")
    );
    assert!(err.errors[..MAX_REPORTED_ERRORS]
        .iter()
        .all(|e| e.message.starts_with("unknown key `bad")));
}

#[test]
fn syntax_errors_are_capped() {
    // A million lines, each a syntax error: the TOML crate alone kept every one of them
    // (some 650 bytes each) before the loader could cap them.
    let garbage = "=\n".repeat(1_000_000);
    let started = Instant::now();
    let err = load_err(&garbage);
    assert!(started.elapsed() < LINEAR_BOUND, "{:?}", started.elapsed());
    assert_eq!(err.errors.len(), MAX_REPORTED_ERRORS + 1);
    // Each `=` line is several errors (no key, no value): at least a million in all.
    let last = &err.errors.last().unwrap().message;
    let more: usize = last
        .strip_prefix("and ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!(more >= 999_900, "{last}");
    assert!(
        last.ends_with(&format!(
            "more errors (only the first {MAX_REPORTED_ERRORS} are reported)"
        )),
        "{last}"
    );
    assert!(err.errors[0].message.starts_with("invalid TOML: "));
}

#[test]
fn warnings_are_capped_too() {
    let mut text = String::new();
    for i in 0..500 {
        writeln!(
            text,
            "[[rules]]\nname = \"r{i}\"\npriority = {i}\nsrc = [\"any\"]\ndst = [\"any\"]\naction = \"deny\"\n"
        )
        .unwrap();
    }
    let loaded = load_policy_str(&text, Path::new("p.toml")).expect("valid");
    assert_eq!(loaded.warnings.len(), MAX_REPORTED_WARNINGS + 1);
    assert_eq!(
        loaded.warnings.last().unwrap().message,
        format!("and 399 more warnings (only the first {MAX_REPORTED_WARNINGS} are reported)")
    );
}

/// `n` rules `src = any`, `dst = any`, `ports = [port(i)]`, as `[[rules]]` tables.
fn any_any_rules(n: usize, port: impl Fn(usize) -> usize) -> String {
    let mut text = String::with_capacity(n * 100);
    for i in 0..n {
        writeln!(
            text,
            "[[rules]]\nname = \"r{i}\"\npriority = {}\nsrc = [\"any\"]\ndst = [\"any\"]\nports = [\"{}\"]\naction = \"permit\"\n",
            i + 1,
            port(i)
        )
        .unwrap();
    }
    text
}

#[test]
fn dead_rule_search_is_near_linear() {
    // Ports repeat every 40 000 rules: rule i + 40 000 is shadowed by rule i, and nothing else.
    let n = 50_000;
    let text = any_any_rules(n, |i| i % 40_000 + 1);
    let loaded = load_policy_str(&text, Path::new("p.toml")).expect("valid");
    let started = Instant::now();
    let pairs = shadowed_rules(&loaded.policy.rules);
    assert!(started.elapsed() < LINEAR_BOUND, "{:?}", started.elapsed());
    assert_eq!(pairs.len(), n - 40_000);
    assert!(pairs.iter().all(|&(i, j)| j == i + 40_000), "{pairs:?}");
}

#[test]
fn dead_rule_search_finds_wide_and_narrow_coverers() {
    let text = r#"
[smartgroups.a]
cidrs = ["10.1.0.0/16"]
[smartgroups.b]
cidrs = ["10.2.0.0/16"]
[addressgroups.x]
cidrs = ["192.0.2.0/24"]
[addressgroups.y]
cidrs = ["198.51.100.0/24"]

[[rules]]
name = "wide-ports"
priority = 1
src = ["a", "b"]
dst = ["x", "y"]
protocol = "tcp"
ports = ["1000-2000", "443"]
action = "deny"

[[rules]]
name = "inside-wide"
priority = 2
src = ["b"]
dst = ["y"]
protocol = "tcp"
ports = ["443", "1500", "1600-1700"]
action = "deny"

[[rules]]
name = "udp-is-not-covered"
priority = 3
src = ["b"]
dst = ["y"]
protocol = "udp"
ports = ["443"]
action = "deny"

[[rules]]
name = "one-port-outside"
priority = 4
src = ["a"]
dst = ["x"]
protocol = "tcp"
ports = ["443", "2001"]
action = "deny"
"#;
    let loaded = load_policy_str(text, Path::new("p.toml")).expect("valid");
    assert_eq!(shadowed_rules(&loaded.policy.rules), vec![(0, 1)]);
}

#[test]
fn inline_rules_and_large_groups_load_in_linear_time() {
    let n = 40_000;
    // Rules as inline tables first (top-level keys come before any table), then the groups.
    let mut text = String::from("rules = [\n");
    for i in 0..n {
        writeln!(
            text,
            "{{ name = \"r{i}\", priority = {i}, src = [\"big\"], dst = [\"web\"], ports = [\"{}\"], action = \"permit\" }},",
            i % 60_000 + 1
        )
        .unwrap();
    }
    text.push_str("]\n[smartgroups.big]\ncidrs = [");
    for i in 0..n {
        write!(text, "\"10.{}.{}.0/24\",", i / 256, i % 256).unwrap();
    }
    text.push_str("]\n[webgroups.web]\ndomains = [");
    for i in 0..n {
        write!(text, "\"h{i}.example.com\",").unwrap();
    }
    text.push_str("]\n");
    let started = Instant::now();
    let loaded = load_policy_str(&text, Path::new("p.toml")).expect("valid");
    assert!(started.elapsed() < LINEAR_BOUND, "{:?}", started.elapsed());
    assert_eq!(loaded.policy.rules.len(), n);
    assert_eq!(loaded.policy.smartgroups[0].cidrs.len(), n);
    assert_eq!(loaded.policy.webgroups[0].patterns.len(), n);
}

#[test]
fn hand_built_policies_are_held_to_the_same_rules() {
    use policy_engine::{AddressGroup, Policy};
    let mut policy = Policy::default();
    for i in 0..300 {
        policy.addressgroups.push(AddressGroup {
            name: format!("g{i}\n"),
            cidrs: vec!["::ffff:10.0.0.0/104".parse().unwrap()],
            description: None,
        });
    }
    let errors = policy.check().unwrap_err();
    assert_eq!(errors.len(), MAX_REPORTED_ERRORS + 1);
    assert!(errors[0].0.contains("use 10.0.0.0/8"), "{}", errors[0]);
    assert!(errors.iter().all(|e| !e.0.contains('\n')));
    assert_eq!(
        errors.last().unwrap().0,
        format!("and 200 more errors (only the first {MAX_REPORTED_ERRORS} are reported)")
    );
}

#[test]
fn a_wildcard_that_can_spell_a_public_suffix_is_warned_about() {
    // `paas.beebyte.io` is on the list's private section: `api.*.beebyte.io` then matches
    // `api.paas.beebyte.io`, a name that whoever registers under that suffix chooses.
    let text = "[webgroups.w]\ndomains = [\"api.*.beebyte.io\", \"api.*.example.com\"]\n";
    let loaded = load_policy_str(text, Path::new("p.toml")).expect("valid");
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert!(
        w.message.contains("`*` can stand for `paas`")
            && w.message.contains("`paas.beebyte.io` is a public suffix"),
        "{}",
        w.message
    );
    assert_eq!((w.line, w.column), (2, 12));
}

#[test]
fn the_catalog_and_the_sample_policies_pass_the_public_suffix_rule() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for policy in [
        "policy.example.toml",
        "demo-policy.toml",
        "policies/observe-first.toml",
    ] {
        let loaded = policy_engine::load_policy_file(&configs.join(policy))
            .unwrap_or_else(|e| panic!("{policy}:\n{e}"));
        let suffix_warnings: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.message.contains("public suffix"))
            .collect();
        assert!(suffix_warnings.is_empty(), "{policy}: {suffix_warnings:?}");
    }
    // The catalog's Bedrock names are exact, one per region; no `*` stands for the region.
    let catalog = std::fs::read_to_string(configs.join("webgroups/ai-providers.toml")).unwrap();
    assert!(!catalog.contains(".*.amazonaws.com\""));
    assert!(catalog.contains("\"bedrock-runtime.us-east-1.amazonaws.com\""));
}

#[test]
fn compiled_size_is_linear_in_rules_of_distinct_ports() {
    use policy_engine::{compile, Action, DstSpec, Policy, PortRange, Ports, Protocol, Rule};
    // One rule per port, twice over: per-port classes with a bitset over all rules each made
    // this 65 535 bitsets of 131 070 bits, over 1 GB.
    let mut policy = Policy::default();
    for i in 0..131_070u32 {
        let port = (i % 65_535 + 1) as u16;
        policy.rules.push(Rule {
            name: format!("r{i}"),
            priority: i,
            src: policy_engine::SrcSpec::Any,
            dst: DstSpec::Any,
            protocol: Protocol::Tcp,
            ports: Ports::Ranges(vec![PortRange {
                start: port,
                end: port,
            }]),
            action: Action::Permit,
            log: false,
            watch: false,
            description: None,
        });
    }
    let started = Instant::now();
    let compiled = compile(&policy, 1);
    assert!(started.elapsed() < LINEAR_BOUND, "{:?}", started.elapsed());
    let bytes = compiled.stats().memory_bytes;
    assert!(bytes < 64 << 20, "{bytes} bytes");
}
