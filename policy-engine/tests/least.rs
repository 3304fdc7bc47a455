//! The least-privilege analyses on policies and flows with known answers: blast radius (first
//! match, partial shadowing by ports, default permit, watch rules), verdict changes over flows
//! (bounded buckets, exact totals), the name probe, and recommended policies fed back through
//! the diff: zero newly denied flows on the traffic they were built from.

use std::net::IpAddr;
use std::path::Path;

use policy_engine::least::blast::{blast_radius, FlagKind};
use policy_engine::least::catalog::Catalog;
use policy_engine::least::changes::policy_changes;
use policy_engine::least::flows::{name_probe, Change, Flow, FlowDiff, MAX_BUCKETS};
use policy_engine::least::recommend::Recommender;
use policy_engine::{compile, load_policy_str, Policy, Query, SynDecision, Transport};

fn load(text: &str) -> Policy {
    match load_policy_str(text, Path::new("test.toml")) {
        Ok(l) => {
            assert!(l.warnings.is_empty(), "{:?}", l.warnings);
            l.policy
        }
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn exfil() -> Catalog {
    Catalog::parse(include_str!("../../configs/webgroups/exfiltration.toml")).unwrap()
}

fn providers() -> Catalog {
    Catalog::parse(include_str!("../../configs/webgroups/ai-providers.toml")).unwrap()
}

fn flow(src: &str, dst: &str, t: Transport, port: u16, name: Option<&str>) -> Flow {
    Flow {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        transport: t,
        dst_port: port,
        name: name.map(str::to_owned),
    }
}

const TCP: Transport = Transport::Tcp;
const UDP: Transport = Transport::Udp;

#[test]
fn an_earlier_deny_takes_ports_out_of_a_later_permit() {
    let p = load(
        r#"
[smartgroups.a]
cidrs = ["10.0.0.0/8"]
[webgroups.openai]
domains = ["api.openai.com"]
[[rules]]
name = "no-alt-port"
priority = 1
src = ["a"]
dst = ["openai"]
protocol = "tcp"
ports = ["8443"]
action = "deny"
[[rules]]
name = "openai"
priority = 2
src = ["a"]
dst = ["openai"]
protocol = "tcp"
ports = ["443", "8443"]
action = "permit"
"#,
    );
    let r = blast_radius(&p, &exfil(), None).unwrap();
    let reach = &r.groups[0].reach;
    assert_eq!(reach.len(), 1);
    assert_eq!(reach[0].ports, vec!["443"]);
    assert!(reach[0].partial);
    assert_eq!(reach[0].rule, "openai");
    assert!(r.groups[0].flags.is_empty(), "{:?}", r.groups[0].flags);
}

#[test]
fn a_permitting_default_reaches_any_but_the_denied_groups() {
    let p = load(
        r#"
[policy]
default_action = "permit"
[smartgroups.a]
cidrs = ["10.0.0.0/8"]
[smartgroups.b]
cidrs = ["10.1.0.0/16"]
[addressgroups.bad]
cidrs = ["192.0.2.0/24"]
[[rules]]
name = "no-bad"
priority = 1
src = ["a"]
dst = ["bad"]
action = "reject"
[[rules]]
name = "b-nothing"
priority = 2
src = ["b"]
dst = "any"
action = "deny"
[[rules]]
name = "watch-a"
priority = 3
src = ["a"]
dst = "any"
action = "permit"
watch = true
"#,
    );
    let r = blast_radius(&p, &exfil(), None).unwrap();
    assert_eq!(r.groups[0].name, "a");
    let a = &r.groups[0];
    assert_eq!(a.reach.len(), 1);
    assert_eq!(a.reach[0].rule, "default");
    assert_eq!(a.reach[0].dst, "any");
    assert_eq!(a.reach[0].except, vec!["bad"]);
    // A permit watch rule is no hidden deny.
    assert_eq!(a.reach[0].watched_by, vec!["watch-a"]);
    let kinds: Vec<FlagKind> = a.flags.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&FlagKind::AnyDestination));
    assert!(!kinds.contains(&FlagKind::WatchOnlyDeny));
    // b denies everything before the default: nothing reachable, exposure 0, ranked last.
    assert_eq!(r.groups[1].name, "b");
    assert!(r.groups[1].reach.is_empty());
    assert_eq!(r.groups[1].exposure, 0);
    assert!(blast_radius(&p, &exfil(), Some("nope")).is_none());
    assert_eq!(
        blast_radius(&p, &exfil(), Some("b")).unwrap().groups.len(),
        1
    );
}

#[test]
fn verdict_changes_are_counted_exactly_past_the_bucket_bound() {
    let old = load(
        "[[rules]]\nname = \"all\"\npriority = 1\nsrc = \"any\"\ndst = \"any\"\naction = \"permit\"\n",
    );
    let new = load("[policy]\ndefault_action = \"deny\"\n");
    let (oc, nc) = (compile(&old, 1), compile(&new, 2));
    let mut diff = FlowDiff::new(&oc, &nc);
    let n = MAX_BUCKETS + 50;
    for i in 0..n {
        let name = format!("h{i}.example.com");
        diff.add(&flow("10.0.0.1", "192.0.2.1", TCP, 443, Some(&name)));
    }
    let (totals, buckets) = diff.finish();
    assert_eq!(totals.flows, n as u64);
    assert_eq!(totals.newly_denied, n as u64);
    assert_eq!(buckets.len(), MAX_BUCKETS + 1);
    assert_eq!(buckets.iter().map(|b| b.flows).sum::<u64>(), n as u64);
    let other = buckets
        .iter()
        .find(|b| b.dst == "(other destinations)")
        .unwrap();
    assert_eq!(other.flows, 50);
    assert!(buckets.iter().all(|b| b.change == Change::NewlyDenied));
    assert!(buckets.iter().all(|b| b.examples.len() <= 3));
}

#[test]
fn the_probe_reads_the_name_that_only_the_candidate_needs() {
    let old = load(
        "[[rules]]\nname = \"all\"\npriority = 1\nsrc = \"any\"\ndst = \"any\"\naction = \"permit\"\n",
    );
    let new = load(
        "[webgroups.openai]\ndomains = [\"api.openai.com\"]\n[[rules]]\nname = \"o\"\npriority = 1\nsrc = \"any\"\ndst = [\"openai\"]\naction = \"permit\"\n",
    );
    let q = Query {
        src: "10.0.0.1".parse::<IpAddr>().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        transport: TCP,
        dst_port: 443,
        name: None,
    };
    assert!(matches!(
        compile(&old, 1).evaluate_without_name(&q),
        SynDecision::Final(_)
    ));
    let probe = compile(&name_probe(&old, &new), 3);
    assert!(matches!(
        probe.evaluate_without_name(&q),
        SynDecision::NeedsName
    ));
    assert!(probe.mode() == policy_engine::Mode::LogOnly);
    // And the other way round: a name only the old policy needs.
    let probe = compile(&name_probe(&new, &old), 4);
    assert!(matches!(
        probe.evaluate_without_name(&q),
        SynDecision::NeedsName
    ));
}

const OBSERVE: &str = r#"
[policy]
mode = "log-only"
[smartgroups.prod]
cidrs = ["10.1.0.0/16"]
selectors = [{ tags = { env = "prod" } }]
[smartgroups."db.tier"]
cidrs = ["10.5.0.0/24"]
[smartgroups.idle]
cidrs = ["10.7.0.0/16"]
[webgroups.everything-ai]
domains = ["*.anthropic.com", "api.openai.com"]
[[rules]]
name = "observe"
priority = 1
src = ["prod"]
dst = "any"
action = "permit"
log = true
[[rules]]
name = "idle-ai"
priority = 2
src = ["idle"]
dst = ["everything-ai"]
action = "permit"
"#;

fn traffic() -> Vec<(Flow, u64)> {
    let t0 = 1_765_000_000_000u64;
    let mut v = Vec::new();
    for i in 0..5 {
        v.push((
            flow("10.1.2.3", "198.18.0.10", TCP, 443, Some("api.openai.com")),
            t0 + i * 60_000,
        ));
    }
    v.push((
        flow("10.1.2.3", "140.82.112.6", TCP, 443, Some("api.github.com")),
        t0,
    ));
    v.push((
        flow(
            "10.1.2.3",
            "140.82.112.6",
            TCP,
            8443,
            Some("api.github.com"),
        ),
        t0 + 1,
    ));
    v.push((flow("10.1.2.4", "10.5.0.9", TCP, 5432, None), t0));
    v.push((flow("10.1.2.4", "192.0.2.53", UDP, 53, None), t0));
    v.push((flow("10.1.2.4", "2001:db8::7", TCP, 443, None), t0));
    v.push((
        flow("10.9.9.9", "93.184.216.34", TCP, 443, Some("example.com")),
        t0,
    ));
    v.push((
        flow(
            "10.1.2.3",
            "34.1.1.1",
            TCP,
            443,
            Some("b1.storage.googleapis.com"),
        ),
        t0,
    ));
    // A name that is not in normal form: decided by address, as the gateway does.
    v.push((
        flow("10.1.2.3", "203.0.113.5", TCP, 443, Some("Bad Name!")),
        t0,
    ));
    v
}

#[test]
fn a_recommendation_permits_exactly_the_traffic_it_was_built_from() {
    let current = load(OBSERVE);
    let compiled = compile(&current, 7);
    let mut rec = Recommender::new(&current, &compiled, None).unwrap();
    let flows = traffic();
    for (f, t) in &flows {
        rec.add(f, *t, false);
    }
    let out = rec.finish(
        &providers(),
        "configs/webgroups/ai-providers.toml",
        &exfil(),
        &["header".into()],
    );
    let loaded = load_policy_str(&out.toml, Path::new("recommended.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    // It checks as `check-policy` does: no errors, and no warnings either.
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let recommended = loaded.policy;
    assert_eq!(out.flows, flows.len() as u64);

    // Fed back through the diff: nothing that was seen is newly denied.
    let rc = compile(&recommended, 8);
    let mut diff = FlowDiff::new(&compiled, &rc);
    for (f, _) in &flows {
        diff.add(f);
    }
    let (totals, buckets) = diff.finish();
    assert_eq!(totals.newly_denied, 0, "{buckets:#?}\n{}", out.toml);
    assert_eq!(totals.flows, flows.len() as u64);

    // Nothing wider than seen: another provider, another port, another GitHub host, a bucket
    // next to the one seen, another source.
    let mut diff = FlowDiff::new(&compiled, &rc);
    for f in [
        flow(
            "10.1.2.3",
            "198.18.0.11",
            TCP,
            443,
            Some("api.anthropic.com"),
        ),
        flow("10.1.2.3", "198.18.0.10", TCP, 80, Some("api.openai.com")),
        flow(
            "10.1.2.3",
            "140.82.112.7",
            TCP,
            443,
            Some("uploads.github.com"),
        ),
        flow(
            "10.1.2.3",
            "34.1.1.1",
            TCP,
            443,
            Some("b2.storage.googleapis.com"),
        ),
        flow("10.1.2.4", "192.0.2.53", TCP, 53, None),
        flow("10.8.0.1", "198.18.0.10", TCP, 443, Some("api.openai.com")),
        flow("10.1.2.3", "198.18.0.10", Transport::Other(1), 0, None),
    ] {
        diff.add(&f);
    }
    assert_eq!(diff.totals().newly_denied, 7);

    // The shape of the text: the catalog group for OpenAI, exact names otherwise, comments with
    // counts and times, the SmartGroup copied with its selector, the exfiltration mark.
    let text = &out.toml;
    assert!(text.contains("[webgroups.openai]"), "{text}");
    assert!(
        text.contains("5 flows, first 2025-12-06T05:46:40Z, last 2025-12-06T05:50:40Z"),
        "{text}"
    );
    assert!(text.contains("selectors = ["), "{text}");
    assert!(text.contains("tags = { \"env\" = \"prod\" }"), "{text}");
    assert!(text.contains("[smartgroups.\"db.tier\"]"), "{text}");
    assert!(
        text.contains("EXFILTRATION-CAPABLE (exfil-object-storage)"),
        "{text}"
    );
    assert!(text.contains("[smartgroups.\"host-10.9.9.9\"]"), "{text}");
    assert!(!text.contains("Bad Name"), "{text}");
    for g in &recommended.webgroups {
        if g.name != "openai" {
            assert!(
                g.patterns.iter().all(|p| p.is_exact()),
                "{}: {:?}",
                g.name,
                g.patterns
            );
        }
    }
    // The east-west flow names the destination SmartGroup.
    assert!(recommended.rules.iter().any(|r| matches!(&r.dst, policy_engine::DstSpec::Groups(g) if g.iter().any(|d| recommended.dst_group_name(*d) == "db.tier"))));
    // The summary: log-only today, idle had no traffic, and its AI group would be denied.
    let summary = out.summary.join("\n");
    assert!(summary.contains("log-only"), "{summary}");
    assert!(summary.contains("idle: no traffic seen"), "{summary}");
    assert!(summary.contains("prod: any"), "{summary}");
}

#[test]
fn denied_flows_stay_denied_and_other_groups_are_left_out() {
    let current = load(
        r#"
[smartgroups.prod]
cidrs = ["10.1.0.0/16"]
[smartgroups.dev]
cidrs = ["10.2.0.0/16"]
[webgroups.openai]
domains = ["api.openai.com"]
[[rules]]
name = "prod-openai"
priority = 1
src = ["prod"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
[[rules]]
name = "dev-any"
priority = 2
src = ["dev"]
dst = "any"
action = "permit"
"#,
    );
    let compiled = compile(&current, 1);
    let blocked = flow("10.1.2.3", "93.184.216.34", TCP, 443, Some("example.com"));
    let allowed = flow("10.1.2.3", "198.18.0.10", TCP, 443, Some("api.openai.com"));
    let dev = flow("10.2.0.1", "198.18.0.10", TCP, 443, Some("api.openai.com"));
    let icmp = flow("10.1.2.3", "198.18.0.10", Transport::Other(1), 0, None);
    let mut rec = Recommender::new(&current, &compiled, Some("prod")).unwrap();
    rec.add(&blocked, 1, true);
    rec.add(&allowed, 2, false);
    rec.add(&dev, 3, false);
    rec.add(&icmp, 4, false);
    let skipped = rec.skipped();
    assert_eq!(
        (
            skipped.denied_today,
            skipped.other_groups,
            skipped.without_ports
        ),
        (1, 1, 1)
    );
    let out = rec.finish(&providers(), "ai", &exfil(), &[]);
    let recommended = load_policy_str(&out.toml, Path::new("r.toml"))
        .unwrap()
        .policy;
    assert!(!out.toml.contains("[smartgroups.dev]"), "{}", out.toml);
    let rc = compile(&recommended, 2);
    let mut diff = FlowDiff::new(&compiled, &rc);
    diff.add(&blocked);
    diff.add(&allowed);
    // Denied today and by the recommendation: unchanged, not newly denied.
    assert_eq!(diff.totals().newly_denied, 0);
    assert!(out
        .summary
        .iter()
        .any(|l| l.contains("1 flow(s) denied today stay denied")));
    assert!(out.summary.iter().any(|l| l.contains("without ports")));
    assert!(Recommender::new(&current, &compiled, Some("nope")).is_err());
}

#[test]
fn rule_and_group_changes_are_listed() {
    let a = load(OBSERVE);
    let mut text = OBSERVE.replace("mode = \"log-only\"", "mode = \"enforce\"");
    text = text.replace(
        "cidrs = [\"10.7.0.0/16\"]",
        "cidrs = [\"10.7.0.0/16\", \"10.8.0.0/16\"]",
    );
    text = text.replace(
        "name = \"idle-ai\"\npriority = 2",
        "name = \"idle-ai\"\npriority = 5",
    );
    text.push_str("[[rules]]\nname = \"new\"\npriority = 9\nsrc = [\"idle\"]\ndst = \"any\"\naction = \"deny\"\n");
    let b = load(&text);
    let changes = policy_changes(&a, &b);
    let find = |kind: &str, name: &str| {
        changes
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .unwrap_or_else(|| panic!("{kind} {name}: {changes:#?}"))
    };
    assert_eq!(find("policy", "policy").detail, "mode log-only -> enforce");
    assert_eq!(find("rule", "idle-ai").detail, "priority 2 -> 5");
    assert_eq!(find("rule", "new").change, "added");
    assert_eq!(find("smartgroup", "idle").detail, "+10.8.0.0/16");
    assert_eq!(changes.len(), 4, "{changes:#?}");
    assert!(policy_changes(&a, &a).is_empty());
}

/// Random policies against the reference evaluator: every connection the naive evaluator
/// permits (enforced) must appear in the blast radius of its source group, through the rule
/// that permits it, with its destination group (or `any`), protocol and port. Reach may be
/// larger than the truth; it must never be smaller.
#[test]
fn blast_radius_covers_every_permitted_connection_of_random_policies() {
    use policy_engine::least::blast::Reach;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    let names = ["a.example.com", "b.example.com", "c.example.org"];
    let ports = [22u16, 53, 443, 8443];
    let mut rng = StdRng::seed_from_u64(17);
    let mut checked = 0;
    for _ in 0..300 {
        let mut text = String::new();
        text.push_str(if rng.gen_bool(0.3) {
            "[policy]\ndefault_action = \"permit\"\n"
        } else {
            "[policy]\ndefault_action = \"deny\"\n"
        });
        for s in 0..3 {
            text.push_str(&format!(
                "[smartgroups.s{s}]\ncidrs = [\"10.{s}.0.0/16\"]\n"
            ));
        }
        for (w, n) in names.iter().enumerate() {
            text.push_str(&format!("[webgroups.w{w}]\ndomains = [\"{n}\"]\n"));
        }
        text.push_str("[addressgroups.a0]\ncidrs = [\"192.0.2.0/24\"]\n");
        let dsts = ["w0", "w1", "w2", "a0", "s0", "s1", "s2"];
        for r in 0..rng.gen_range(1..8) {
            let src = if rng.gen_bool(0.3) {
                "\"any\"".to_owned()
            } else {
                format!("[\"s{}\"]", rng.gen_range(0..3))
            };
            let dst = if rng.gen_bool(0.25) {
                "\"any\"".to_owned()
            } else {
                let a = dsts[rng.gen_range(0..dsts.len())];
                let b = dsts[rng.gen_range(0..dsts.len())];
                if a == b {
                    format!("[\"{a}\"]")
                } else {
                    format!("[\"{a}\", \"{b}\"]")
                }
            };
            let protocol = ["any", "tcp", "udp"][rng.gen_range(0..3)];
            let port_line = match rng.gen_range(0..3) {
                0 => String::new(),
                1 => format!("ports = [\"{}\"]\n", ports[rng.gen_range(0..ports.len())]),
                _ => "ports = [\"400-9000\"]\n".to_owned(),
            };
            let action = ["permit", "deny", "reject"][rng.gen_range(0..3)];
            let watch = rng.gen_bool(0.2);
            text.push_str(&format!(
                "[[rules]]\nname = \"r{r}\"\npriority = {r}\nsrc = {src}\ndst = {dst}\nprotocol = \"{protocol}\"\n{port_line}action = \"{action}\"\nwatch = {watch}\n"
            ));
        }
        // Shadowed rules are warnings, not errors: load without the no-warning check.
        let policy = load_policy_str(&text, Path::new("random.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .policy;
        let radius = blast_radius(&policy, &exfil(), None).unwrap();
        for _ in 0..200 {
            let s = rng.gen_range(0..3);
            let src: IpAddr = format!("10.{s}.1.1").parse().unwrap();
            let dst: IpAddr = match rng.gen_range(0..3) {
                0 => "192.0.2.9".parse().unwrap(),
                1 => format!("10.{}.2.2", rng.gen_range(0..3)).parse().unwrap(),
                _ => "198.51.100.1".parse().unwrap(),
            };
            let transport = [TCP, UDP, Transport::Other(1)][rng.gen_range(0..3)];
            let port = if transport.has_ports() {
                ports[rng.gen_range(0..ports.len())]
            } else {
                0
            };
            let name = rng.gen_bool(0.6).then(|| names[rng.gen_range(0..3)]);
            let q = Query {
                src,
                dst,
                transport,
                dst_port: port,
                name,
            };
            let v = policy_engine::naive::evaluate(&policy, &q);
            if v.effective_action != policy_engine::Action::Permit {
                continue;
            }
            checked += 1;
            let rule = match v.effective_rule {
                policy_engine::RuleRef::Rule(i) => policy.rules[i as usize].name.clone(),
                policy_engine::RuleRef::Default => "default".to_owned(),
            };
            let group = radius
                .groups
                .iter()
                .find(|g| g.name == format!("s{s}"))
                .unwrap();
            let dst_matches = |r: &Reach| r.dst == "any" || v.dst_groups.contains(&r.dst);
            let port_matches = |r: &Reach| {
                let proto_ok = match r.protocol {
                    "any" => true,
                    "tcp" => transport == TCP,
                    "udp" => transport == UDP,
                    "other" => !transport.has_ports(),
                    _ => false,
                };
                let ports_ok = r.ports == ["any"]
                    || (transport.has_ports()
                        && r.ports.iter().any(|p| match p.split_once('-') {
                            Some((a, b)) => {
                                a.parse::<u16>().unwrap() <= port && port <= b.parse().unwrap()
                            }
                            None => p.parse::<u16>().unwrap() == port,
                        }));
                proto_ok && ports_ok
            };
            assert!(
                group
                    .reach
                    .iter()
                    .any(|r| r.rule == rule && dst_matches(r) && port_matches(r)),
                "{q:?} permitted by {rule} is missing from the reach of s{s}: {:#?}\n{text}",
                group.reach
            );
        }
    }
    assert!(
        checked > 1000,
        "only {checked} permitted connections were checked"
    );
}

/// Random traffic: whatever the mix of sources (in a group or not), names (catalog, exact,
/// malformed, none), addresses (IPv4, IPv6, east-west), transports and ports, the
/// recommendation loads without warnings and, fed back through the diff, denies none of it.
#[test]
fn recommendations_of_random_traffic_deny_none_of_it() {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    let current = load(OBSERVE);
    let compiled = compile(&current, 1);
    let names = [
        Some("api.openai.com"),
        Some("api.anthropic.com"),
        Some("bedrock-runtime.eu-west-1.amazonaws.com"),
        Some("x.example.com"),
        Some("pastebin.com"),
        Some("Not A Name"),
        None,
    ];
    let srcs = [
        "10.1.0.5",
        "10.1.3.4",
        "10.5.0.2",
        "10.7.0.1",
        "10.66.0.1",
        "fd00::9",
    ];
    let dsts = [
        "198.18.0.1",
        "10.5.0.9",
        "2001:db8::1",
        "192.0.2.200",
        "10.1.9.9",
    ];
    let mut rng = StdRng::seed_from_u64(42);
    for round in 0..40 {
        let mut rec = Recommender::new(&current, &compiled, None).unwrap();
        let mut flows = Vec::new();
        for i in 0..rng.gen_range(1..200) {
            let f = flow(
                srcs[rng.gen_range(0..srcs.len())],
                dsts[rng.gen_range(0..dsts.len())],
                if rng.gen_bool(0.7) { TCP } else { UDP },
                [53, 443, 8443, 5432, 65535][rng.gen_range(0..5)],
                names[rng.gen_range(0..names.len())],
            );
            rec.add(&f, 1_765_000_000_000 + i, false);
            flows.push(f);
        }
        let out = rec.finish(&providers(), "ai", &exfil(), &[]);
        let loaded = load_policy_str(&out.toml, Path::new("r.toml"))
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", out.toml));
        assert!(
            loaded.warnings.is_empty(),
            "round {round}: {:?}",
            loaded.warnings
        );
        let rc = compile(&loaded.policy, 2);
        let mut diff = FlowDiff::new(&compiled, &rc);
        for f in &flows {
            diff.add(f);
        }
        let (totals, buckets) = diff.finish();
        assert_eq!(
            totals.newly_denied, 0,
            "round {round}: {buckets:#?}\n{}",
            out.toml
        );
    }
}

#[test]
fn a_watch_rule_on_a_smaller_webgroup_observes_part_of_a_larger_one() {
    // The example policy trials a deny of OpenRouter for dev (a watch rule) above dev's permit
    // of every AI provider (`ai-all`, which lists OpenRouter's names too).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/policy.example.toml");
    let policy = policy_engine::load_policy_file(&path).unwrap().policy;
    let r = blast_radius(&policy, &exfil(), Some("dev")).unwrap();
    let reach = &r.groups[0].reach;
    assert_eq!(reach[0].dst, "ai-all");
    assert_eq!(reach[0].watched_by, vec!["trial-dev-no-openrouter"]);
    assert!(r.groups[0]
        .flags
        .iter()
        .any(|f| f.kind == FlagKind::WatchOnlyDeny && f.rule == "dev-to-ai-providers"));
    // prod's Bedrock permit shares no name with the watched group.
    let r = blast_radius(&policy, &exfil(), Some("prod-agents")).unwrap();
    assert!(r.groups[0].reach.iter().all(|x| x.watched_by.is_empty()));
}

#[test]
fn the_summary_names_what_would_be_taken_away() {
    let current = load(
        r#"
[smartgroups.prod]
cidrs = ["10.1.0.0/16"]
[webgroups.openai]
domains = ["api.openai.com"]
[webgroups.tools]
domains = ["api.github.com", "*.atlassian.net"]
[webgroups.unused]
domains = ["api.linear.app"]
[[rules]]
name = "openai"
priority = 1
src = ["prod"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
[[rules]]
name = "tools"
priority = 2
src = ["prod"]
dst = ["tools", "unused"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#,
    );
    let compiled = compile(&current, 1);
    let mut rec = Recommender::new(&current, &compiled, None).unwrap();
    rec.add(
        &flow("10.1.0.1", "198.18.0.1", TCP, 443, Some("api.openai.com")),
        1,
        false,
    );
    rec.add(
        &flow("10.1.0.1", "198.18.0.2", TCP, 443, Some("api.github.com")),
        2,
        false,
    );
    let out = rec.finish(&providers(), "ai", &exfil(), &[]);
    let summary = out.summary.join("\n");
    // Every name of `openai` was seen: nothing taken away, no line.
    assert!(!summary.contains("openai"), "{summary}");
    assert!(
        summary.contains("prod: tools (tcp 443) through `tools` would be narrowed to the 1 name(s) seen (it has 2 pattern(s))"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "prod: unused (tcp 443) through `tools` would be denied: no traffic seen to it"
        ),
        "{summary}"
    );
}
