//! A synthetic, deterministic policy at scale, and random queries against it.
//!
//! The shape follows a large real deployment: many small SmartGroups (a few subnets and hosts
//! each), many WebGroups (tens of names each: exact names, `*.` suffixes and a few single-label
//! wildcards), threat-feed AddressGroups with many host routes, and rules that mostly name one to
//! three groups on each side, with a few `any` rules and watch rules among them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use policy_engine::{
    Action, AddressGroup, DefaultAction, DstGroup, DstSpec, Mode, NamePattern, Policy, PortRange,
    Ports, Protocol, QuicMode, Rule, SmartGroup, SrcSpec, Transport, WebGroup,
};

/// Sizes of a synthetic policy.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Rules.
    pub rules: usize,
    /// Name patterns over all WebGroups.
    pub patterns: usize,
    /// CIDRs over all SmartGroups and AddressGroups.
    pub cidrs: usize,
}

impl Shape {
    /// The size the performance targets are stated for: 10k rules, 100k patterns, 50k CIDRs.
    pub const LARGE: Shape = Shape {
        rules: 10_000,
        patterns: 100_000,
        cidrs: 50_000,
    };
}

/// A small deterministic generator (SplitMix64), so that every run measures the same policy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const WORDS: &[&str] = &[
    "api",
    "auth",
    "cdn",
    "data",
    "edge",
    "files",
    "gw",
    "inference",
    "login",
    "models",
    "push",
    "queue",
    "search",
    "storage",
    "stream",
    "sync",
    "upload",
    "ws",
];
const TLDS: &[&str] = &["com", "net", "io", "ai", "org", "dev", "co.uk", "cloud"];

fn domain(i: usize) -> String {
    format!("vendor{i}.{}", TLDS[i % TLDS.len()])
}

/// One generated pattern and a name it matches.
fn pattern_and_name(rng: &mut Rng, group: usize, k: usize) -> (String, String) {
    let base = domain(group * 7 + k % 5);
    let word = WORDS[rng.below(WORDS.len())];
    match rng.below(10) {
        0..=5 => {
            let name = format!("{word}{k}.{base}");
            (name.clone(), name)
        }
        6..=8 => (
            format!("*.{word}{k}.{base}"),
            format!("{}.{word}{k}.{base}", WORDS[rng.below(WORDS.len())]),
        ),
        _ => (
            format!("{word}{k}.*.{base}"),
            format!("{word}{k}.region-{}.{base}", rng.below(20)),
        ),
    }
}

/// A synthetic policy and, for building queries, names its patterns match.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// The policy.
    pub policy: Policy,
    /// Names that match at least one pattern.
    pub matching_names: Vec<String>,
}

fn v4(rng: &mut Rng, first_octet: u8) -> Ipv4Addr {
    let x = rng.next_u64() as u32;
    Ipv4Addr::from((u32::from(first_octet) << 24) | (x & 0x00ff_ffff))
}

/// Builds a policy of the given shape: SmartGroups hold 40% of the CIDRs (10 each), AddressGroups
/// 60% (30 each), WebGroups 20 patterns each.
pub fn synthetic_policy(shape: Shape, seed: u64) -> Synthetic {
    // One generator feeds every step, in this order: the steps must not be reordered, or the
    // same seed would give another policy and bench runs would stop being comparable.
    let mut rng = Rng::new(seed);
    let smart_cidrs = shape.cidrs * 2 / 5;
    let addr_cidrs = shape.cidrs - smart_cidrs;
    let smartgroups = smartgroups(&mut rng, smart_cidrs);
    let addressgroups = addressgroups(&mut rng, addr_cidrs);
    let (webgroups, matching_names) = webgroups(&mut rng, shape.patterns);
    let counts = GroupCounts {
        smart: smartgroups.len(),
        address: addressgroups.len(),
        web: webgroups.len(),
    };
    let rules = (0..shape.rules)
        .map(|i| synthetic_rule(&mut rng, i, counts))
        .collect();
    Synthetic {
        policy: Policy {
            default_action: DefaultAction::Deny,
            mode: Mode::Enforce,
            quic: QuicMode::Inspect,
            // Synthetic names resolve nowhere: the DNS check has its own benches and tests.
            sni_dns_check: policy_engine::SniDnsCheck::Off,
            smartgroups,
            webgroups,
            addressgroups,
            rules,
        },
        matching_names,
    }
}

/// How many groups of each kind the rules may name.
#[derive(Debug, Clone, Copy)]
struct GroupCounts {
    smart: usize,
    address: usize,
    web: usize,
}

/// SmartGroups of 10 CIDRs each: mostly IPv4 /24, some /20 and /32, a tenth IPv6 /64.
fn smartgroups(rng: &mut Rng, total: usize) -> Vec<SmartGroup> {
    let n_smart = (total / 10).max(1);
    let mut smartgroups = Vec::with_capacity(n_smart);
    let mut made = 0;
    for g in 0..n_smart {
        let mut cidrs = Vec::new();
        while cidrs.len() < 10 && made < total {
            let net = match rng.below(10) {
                0 => {
                    let a = Ipv6Addr::new(0xfd00, g as u16, rng.below(256) as u16, 0, 0, 0, 0, 0);
                    IpNet::new(IpAddr::V6(a), 64)
                }
                1..=6 => IpNet::new(IpAddr::V4(v4(rng, 10)), 24),
                7 => IpNet::new(IpAddr::V4(v4(rng, 10)), 20),
                _ => IpNet::new(IpAddr::V4(v4(rng, 10)), 32),
            }
            .expect("valid prefix")
            .trunc();
            cidrs.push(net);
            made += 1;
        }
        smartgroups.push(SmartGroup {
            name: format!("sg-{g}"),
            cidrs,
            selectors: Vec::new(),
            description: None,
        });
    }
    smartgroups
}

/// AddressGroups of 30 public-looking CIDRs each, mostly host addresses.
fn addressgroups(rng: &mut Rng, total: usize) -> Vec<AddressGroup> {
    let n_addr = (total / 30).max(1);
    let mut addressgroups = Vec::with_capacity(n_addr);
    let mut made = 0;
    for g in 0..n_addr {
        let mut cidrs = Vec::new();
        while cidrs.len() < 30 && made < total {
            let first = [23u8, 45, 52, 104, 151, 185, 198][rng.below(7)];
            let len = if rng.chance(0.8) { 32 } else { 24 };
            let net = IpNet::new(IpAddr::V4(v4(rng, first)), len)
                .expect("valid prefix")
                .trunc();
            cidrs.push(net);
            made += 1;
        }
        addressgroups.push(AddressGroup {
            name: format!("ag-{g}"),
            cidrs,
            description: None,
        });
    }
    addressgroups
}

/// WebGroups of 20 patterns each, and for every pattern a name it matches.
fn webgroups(rng: &mut Rng, total: usize) -> (Vec<WebGroup>, Vec<String>) {
    let n_web = (total / 20).max(1);
    let mut webgroups = Vec::with_capacity(n_web);
    let mut matching_names = Vec::with_capacity(total);
    let mut made = 0;
    for g in 0..n_web {
        let mut patterns = Vec::new();
        let mut k = 0;
        while patterns.len() < 20 && made < total {
            let (text, name) = pattern_and_name(rng, g, k + g * 20);
            k += 1;
            let p = NamePattern::parse(&text).expect("generated patterns are valid");
            debug_assert!(p.matches(&name));
            patterns.push(p);
            matching_names.push(name);
            made += 1;
        }
        webgroups.push(WebGroup {
            name: format!("wg-{g}"),
            patterns,
            description: None,
        });
    }
    (webgroups, matching_names)
}

/// Rule `i`: one to three SmartGroups (1% `any`) to WebGroups, AddressGroups or SmartGroups,
/// mostly TCP 443.
fn synthetic_rule(rng: &mut Rng, i: usize, n: GroupCounts) -> Rule {
    let src = if rng.chance(0.01) {
        SrcSpec::Any
    } else {
        let mut g: Vec<u32> = (0..1 + rng.below(3))
            .map(|_| rng.below(n.smart) as u32)
            .collect();
        g.sort_unstable();
        g.dedup();
        SrcSpec::Groups(g)
    };
    let dst = match rng.below(100) {
        0..=69 => DstSpec::Groups(
            (0..1 + rng.below(2))
                .map(|_| DstGroup::Web(rng.below(n.web) as u32))
                .collect(),
        ),
        70..=94 => DstSpec::Groups(vec![DstGroup::Address(rng.below(n.address) as u32)]),
        95..=97 => DstSpec::Groups(vec![DstGroup::Smart(rng.below(n.smart) as u32)]),
        _ if src != SrcSpec::Any => DstSpec::Any,
        _ => DstSpec::Groups(vec![DstGroup::Address(rng.below(n.address) as u32)]),
    };
    let (protocol, ports) = synthetic_ports(rng);
    let action = match rng.below(10) {
        0..=5 => Action::Permit,
        6..=8 => Action::Deny,
        _ => Action::Reject,
    };
    Rule {
        name: format!("rule-{i}"),
        priority: (i as u32 + 1) * 10,
        src,
        dst,
        protocol,
        ports,
        action,
        log: rng.chance(0.3),
        watch: rng.chance(0.05),
        description: None,
    }
}

/// Mostly TCP 443; some TCP port ranges, UDP 443, and any.
fn synthetic_ports(rng: &mut Rng) -> (Protocol, Ports) {
    let one = |port: u16| {
        Ports::Ranges(vec![PortRange {
            start: port,
            end: port,
        }])
    };
    match rng.below(10) {
        0..=6 => (Protocol::Tcp, one(443)),
        7 => (
            Protocol::Tcp,
            Ports::Ranges(vec![PortRange {
                start: 8000 + rng.below(100) as u16,
                end: 8100 + rng.below(100) as u16,
            }]),
        ),
        8 => (Protocol::Udp, one(443)),
        _ => (Protocol::Any, Ports::Any),
    }
}

/// One generated query (owns its name).
#[derive(Debug, Clone)]
pub struct OwnedQuery {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport.
    pub transport: Transport,
    /// Destination port.
    pub dst_port: u16,
    /// Normalised name, if any.
    pub name: Option<String>,
}

impl OwnedQuery {
    /// Borrows as a [`policy_engine::Query`].
    pub fn as_query(&self) -> policy_engine::Query<'_> {
        policy_engine::Query {
            src: self.src,
            dst: self.dst,
            transport: self.transport,
            dst_port: self.dst_port,
            name: self.name.as_deref(),
        }
    }
}

fn addr_in(rng: &mut Rng, net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host_bits = 32 - u32::from(n.prefix_len());
            let mask = if host_bits == 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            IpAddr::V4(Ipv4Addr::from(
                u32::from(n.network()) | (rng.next_u64() as u32 & mask),
            ))
        }
        IpNet::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix_len());
            let mask = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (r & mask)))
        }
    }
}

/// `count` random queries: sources mostly inside SmartGroups, destinations partly inside
/// AddressGroups, half of them with a name that matches a pattern and half with a name that
/// matches none; mostly TCP 443.
pub fn random_queries(s: &Synthetic, count: usize, seed: u64) -> Vec<OwnedQuery> {
    let mut rng = Rng::new(seed);
    let p = &s.policy;
    (0..count)
        .map(|i| {
            let src = if rng.chance(0.9) && !p.smartgroups.is_empty() {
                let g = &p.smartgroups[rng.below(p.smartgroups.len())];
                let net = g.cidrs[rng.below(g.cidrs.len())];
                addr_in(&mut rng, &net)
            } else {
                IpAddr::V4(v4(&mut rng, 172))
            };
            let dst = if rng.chance(0.3) && !p.addressgroups.is_empty() {
                let g = &p.addressgroups[rng.below(p.addressgroups.len())];
                let net = g.cidrs[rng.below(g.cidrs.len())];
                addr_in(&mut rng, &net)
            } else {
                IpAddr::V4(v4(&mut rng, 34))
            };
            let name = if i % 2 == 0 && !s.matching_names.is_empty() {
                s.matching_names[rng.below(s.matching_names.len())].clone()
            } else {
                format!(
                    "host{}.unrelated{}.example",
                    rng.below(1000),
                    rng.below(1000)
                )
            };
            let (transport, dst_port) = match rng.below(10) {
                0..=7 => (Transport::Tcp, 443),
                8 => (Transport::Udp, 443),
                _ => (Transport::Tcp, 8000 + rng.below(200) as u16),
            };
            OwnedQuery {
                src,
                dst,
                transport,
                dst_port,
                name: Some(name),
            }
        })
        .collect()
}
