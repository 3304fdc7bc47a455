//! The compiled table against the naive first-match evaluator, on random policies and queries:
//! IPv4 and IPv6, overlapping CIDRs (nested and shared between groups), overlapping patterns
//! (exact, `*.` suffix, single-label `*`), watch rules, log-only mode, both defaults. Any
//! disagreement fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;

use policy_engine::naive::{self, NaiveSynDecision};
use policy_engine::{
    compile, shadowed_rules, Action, AddressGroup, CompiledPolicy, DefaultAction, DstGroup,
    DstSpec, Mode, NamePattern, Policy, PortRange, Ports, Protocol, Query, QuicMode, Rule, RuleRef,
    SmartGroup, SrcSpec, SynDecision, Transport, Verdict, WebGroup,
};

/// Addresses are drawn from a small pool so that CIDRs overlap and queries hit them.
fn v4_addr() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..4, 0u8..4, 0u8..3, 0u8..4)
        .prop_map(|(a, b, c, d)| Ipv4Addr::new(10, a, b * 16, c * 64 + d))
}

fn v6_addr() -> impl Strategy<Value = Ipv6Addr> {
    (0u16..3, 0u16..3, 0u16..4).prop_map(|(a, b, c)| Ipv6Addr::new(0xfd00, a, 0, 0, b, 0, 0, c))
}

/// The edges of each address space.
const EDGES: &[&str] = &[
    "0.0.0.0",
    "127.255.255.255",
    "128.0.0.0",
    "255.255.255.255",
    "::",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        6 => v4_addr().prop_map(IpAddr::V4),
        2 => v6_addr().prop_map(IpAddr::V6),
        1 => prop::sample::select(EDGES).prop_map(|a| a.parse::<IpAddr>().expect("edge address")),
    ]
}

/// Wide and edge CIDRs: the whole space, halves, the last address.
const WIDE: &[&str] = &[
    "0.0.0.0/0",
    "0.0.0.0/1",
    "128.0.0.0/1",
    "255.255.255.255/32",
    "10.0.0.0/8",
    "::/0",
    "8000::/1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
];

fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        1 => prop::sample::select(WIDE).prop_map(|c| c.parse::<IpNet>().expect("wide CIDR")),
        4 => (
            v4_addr(),
            prop::sample::select(vec![8u8, 12, 16, 20, 24, 26, 30, 32])
        )
            .prop_map(|(a, len)| IpNet::new(IpAddr::V4(a), len).expect("prefix").trunc()),
        2 => (
            v6_addr(),
            prop::sample::select(vec![16u8, 32, 48, 64, 96, 126, 128])
        )
            .prop_map(|(a, len)| IpNet::new(IpAddr::V6(a), len).expect("prefix").trunc()),
    ]
}

/// Short labels, and labels of 8, 9, 15, 16 and 30 bytes: names are hashed 8 bytes at a time and
/// the trie keeps labels of more than 15 bytes out of line.
const LABELS: &[&str] = &[
    "a",
    "b",
    "api",
    "x",
    "abcdefgh",
    "abcdefghi",
    "label-of-15byte",
    "label-of-16bytes",
    "a-very-long-label-of-30-bytes0",
];
const BASES: &[&str] = &["example.com", "example.org", "b.example.com"];

fn label() -> impl Strategy<Value = &'static str> {
    prop::sample::select(LABELS)
}

fn base() -> impl Strategy<Value = &'static str> {
    prop::sample::select(BASES)
}

fn pattern() -> impl Strategy<Value = NamePattern> {
    let text = prop_oneof![
        // exact: [label.]base
        (prop::option::of(label()), base()).prop_map(|(l, b)| match l {
            Some(l) => format!("{l}.{b}"),
            None => b.to_owned(),
        }),
        // any depth: *.[label.]base
        (prop::option::of(label()), base()).prop_map(|(l, b)| match l {
            Some(l) => format!("*.{l}.{b}"),
            None => format!("*.{b}"),
        }),
        // single label in the middle: label.*.base, and *.label.*.base
        (label(), base()).prop_map(|(l, b)| format!("{l}.*.{b}")),
        (label(), base()).prop_map(|(l, b)| format!("*.{l}.*.{b}")),
    ];
    text.prop_map(|t| NamePattern::parse(&t).expect("generated patterns are valid"))
}

fn name() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 0..4), base()).prop_map(|(labels, b)| {
        let mut n = labels.join(".");
        if !n.is_empty() {
            n.push('.');
        }
        n.push_str(b);
        n
    })
}

fn ports() -> impl Strategy<Value = Ports> {
    let r = |s: u16, e: u16| PortRange { start: s, end: e };
    prop::sample::select(vec![
        Ports::Any,
        Ports::Any,
        Ports::Ranges(vec![r(80, 80)]),
        Ports::Ranges(vec![r(443, 443)]),
        Ports::Ranges(vec![r(440, 450)]),
        Ports::Ranges(vec![r(1, 1000)]),
        Ports::Ranges(vec![r(443, 443), r(8443, 8445)]),
        Ports::Ranges(vec![r(65535, 65535)]),
    ])
}

#[derive(Debug, Clone)]
struct RawRule {
    src: Option<Vec<usize>>,
    dst: Option<Vec<(u8, usize)>>,
    protocol: Protocol,
    ports: Ports,
    action: Action,
    log: bool,
    watch: bool,
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    (
        prop::option::weighted(0.8, prop::collection::vec(0usize..8, 1..3)),
        prop::option::weighted(0.85, prop::collection::vec((0u8..3, 0usize..8), 1..4)),
        prop::sample::select(vec![Protocol::Any, Protocol::Tcp, Protocol::Udp]),
        ports(),
        prop::sample::select(vec![Action::Permit, Action::Deny, Action::Reject]),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(src, dst, protocol, ports, action, log, watch)| RawRule {
            src,
            dst,
            protocol,
            ports,
            action,
            log,
            watch,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(prop::collection::vec(cidr(), 0..4), 0..6),
        prop::collection::vec(prop::collection::vec(pattern(), 0..4), 0..5),
        prop::collection::vec(prop::collection::vec(cidr(), 0..4), 0..4),
        prop::collection::vec(raw_rule(), 0..14),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(smart, web, addr, rules, log_only, default_permit)| {
            let smartgroups: Vec<SmartGroup> = smart
                .into_iter()
                .enumerate()
                .map(|(i, cidrs)| SmartGroup {
                    name: format!("s{i}"),
                    cidrs,
                    selectors: Vec::new(),
                    description: None,
                })
                .collect();
            let webgroups: Vec<WebGroup> = web
                .into_iter()
                .enumerate()
                .map(|(i, patterns)| WebGroup {
                    name: format!("w{i}"),
                    patterns,
                    description: None,
                })
                .collect();
            let addressgroups: Vec<AddressGroup> = addr
                .into_iter()
                .enumerate()
                .map(|(i, cidrs)| AddressGroup {
                    name: format!("a{i}"),
                    cidrs,
                    description: None,
                })
                .collect();
            let (ns, nw, na) = (smartgroups.len(), webgroups.len(), addressgroups.len());
            let rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let src = match r.src {
                        Some(g) if ns > 0 => {
                            let mut g: Vec<u32> = g.iter().map(|&g| (g % ns) as u32).collect();
                            g.dedup();
                            SrcSpec::Groups(g)
                        }
                        _ => SrcSpec::Any,
                    };
                    let dst_groups: Vec<DstGroup> = r
                        .dst
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(kind, g)| match kind {
                            0 if nw > 0 => Some(DstGroup::Web((g % nw) as u32)),
                            1 if na > 0 => Some(DstGroup::Address((g % na) as u32)),
                            2 if ns > 0 => Some(DstGroup::Smart((g % ns) as u32)),
                            _ => None,
                        })
                        .collect();
                    let dst = if dst_groups.is_empty() {
                        DstSpec::Any
                    } else {
                        DstSpec::Groups(dst_groups)
                    };
                    Rule {
                        name: format!("r{i}"),
                        priority: (i as u32 + 1) * 10,
                        src,
                        dst,
                        protocol: r.protocol,
                        ports: r.ports,
                        action: r.action,
                        log: r.log,
                        watch: r.watch,
                        description: None,
                    }
                })
                .collect();
            Policy {
                default_action: if default_permit {
                    DefaultAction::Permit
                } else {
                    DefaultAction::Deny
                },
                mode: if log_only {
                    Mode::LogOnly
                } else {
                    Mode::Enforce
                },
                // The verdicts compared here do not read it: only the gateway's UDP 443 path does.
                quic: QuicMode::Inspect,
                sni_dns_check: Default::default(),
                smartgroups,
                webgroups,
                addressgroups,
                rules,
            }
        })
}

#[derive(Debug, Clone)]
struct RawQuery {
    src: IpAddr,
    dst: IpAddr,
    transport: Transport,
    port: u16,
    name: Option<String>,
}

fn query() -> impl Strategy<Value = RawQuery> {
    (
        addr(),
        addr(),
        prop::sample::select(vec![
            Transport::Tcp,
            Transport::Tcp,
            Transport::Udp,
            Transport::Other(1),
        ]),
        prop::sample::select(vec![80u16, 443, 445, 1000, 1001, 8444, 65535, 22]),
        prop::option::weighted(0.7, name()),
    )
        .prop_map(|(src, dst, transport, port, name)| RawQuery {
            src,
            dst,
            transport,
            port: if transport.has_ports() { port } else { 0 },
            name,
        })
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn same(c: &CompiledPolicy, v: &Verdict, n: &naive::NaiveVerdict) -> Result<(), String> {
    let got = (
        v.action,
        v.enforced,
        v.rule,
        v.effective_action,
        v.effective_rule,
        v.log,
    );
    let want = (
        n.action,
        n.enforced,
        n.rule,
        n.effective_action,
        n.effective_rule,
        n.log,
    );
    if got != want {
        return Err(format!("verdict {got:?}, naive {want:?}"));
    }
    let src: Vec<String> = c.src_groups(v).map(str::to_owned).collect();
    if sorted(src.clone()) != sorted(n.src_groups.clone()) {
        return Err(format!("src groups {src:?}, naive {:?}", n.src_groups));
    }
    let dst: Vec<String> = c.dst_groups(v).map(str::to_owned).collect();
    if v.dst_groups_complete() {
        if sorted(dst.clone()) != sorted(n.dst_groups.clone()) || dst.len() != n.dst_groups.len() {
            return Err(format!("dst groups {dst:?}, naive {:?}", n.dst_groups));
        }
    } else if dst.iter().any(|g| !n.dst_groups.contains(g)) {
        return Err(format!(
            "dst groups {dst:?} not within naive {:?}",
            n.dst_groups
        ));
    }
    Ok(())
}

fn check(policy: &Policy, queries: &[RawQuery]) -> Result<(), TestCaseError> {
    policy
        .check()
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let compiled = compile(policy, 7);
    let shadowed = shadowed_rules(&policy.rules);
    for raw in queries {
        let q = Query {
            src: raw.src,
            dst: raw.dst,
            transport: raw.transport,
            dst_port: raw.port,
            name: raw.name.as_deref(),
        };
        let v = compiled.evaluate(&q);
        let n = naive::evaluate(policy, &q);
        // A rule reported as shadowed never decides anything.
        for &(_, j) in &shadowed {
            let j = RuleRef::Rule(j as u32);
            prop_assert!(
                n.rule != j && n.effective_rule != j,
                "shadowed rule decided {:?}",
                q
            );
        }
        same(&compiled, &v, &n).map_err(|e| TestCaseError::fail(format!("{q:?}: {e}")))?;

        let syn = compiled.evaluate_without_name(&q);
        match (syn, naive::evaluate_without_name(policy, &q)) {
            (SynDecision::NeedsName, NaiveSynDecision::NeedsName) => {}
            (SynDecision::Final(v), NaiveSynDecision::Final(n)) => {
                same(&compiled, &v, &n)
                    .map_err(|e| TestCaseError::fail(format!("SYN {q:?}: {e}")))?;
                // A final SYN verdict must be the verdict whatever name comes later.
                let with_name = compiled.evaluate(&q);
                let key = |v: &Verdict| {
                    (
                        v.action,
                        v.enforced,
                        v.rule,
                        v.effective_action,
                        v.effective_rule,
                        v.log,
                    )
                };
                prop_assert_eq!(
                    key(&v),
                    key(&with_name),
                    "SYN verdict changed with the name: {:?}",
                    q
                );
            }
            (a, b) => {
                return Err(TestCaseError::fail(format!(
                    "{q:?}: SYN decision {a:?}, naive {b:?}"
                )))
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_table_agrees_with_naive_evaluator(
        policy in policy(),
        queries in prop::collection::vec(query(), 1..12),
    ) {
        check(&policy, &queries)?;
    }
}

#[test]
fn deny_all_denies_everything() {
    let c = CompiledPolicy::deny_all(3);
    assert_eq!(c.version(), 3);
    let q = Query {
        src: "10.0.0.1".parse().expect("ip"),
        dst: "192.0.2.1".parse().expect("ip"),
        transport: Transport::Tcp,
        dst_port: 443,
        name: Some("api.openai.com"),
    };
    let v = c.evaluate(&q);
    assert_eq!(v.action, Action::Deny);
    assert_eq!(v.effective_action, Action::Deny);
    assert!(v.enforced);
    assert!(v.log);
    assert_eq!(c.rule_name(v.rule), "default");
    assert_eq!(c.evaluate_without_name(&q), SynDecision::Final(v));
    assert_eq!(c.src_groups(&v).count(), 0);
    assert_eq!(c.dst_groups(&v).count(), 0);
}
