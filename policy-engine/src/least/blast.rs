//! Blast radius: for each SmartGroup, what a compromised member may reach under a policy.
//!
//! Rules are walked in first-match order for one source group at a time. A non-watch rule that
//! applies to the group (its `src` is `any` or names the group) decides, for each destination
//! it names, the traffic ([`Space`]) that earlier non-watch rules with the same destination (or
//! `any`) have not already decided. What a permit decides is reach; what a deny or reject
//! decides is carved out of later rules, and, when it names a group, listed as an exception of
//! a later `any`. Watch rules decide nothing (they enforce nothing): they are remembered, and
//! every later reach they share traffic with is marked as observed by them (by group name, or
//! for WebGroups by a shared name pattern).
//!
//! A `default_action = "permit"` adds the reach `any` through `default` with every exception
//! above it; `mode = "log-only"` enforces nothing, so every group reaches everything whatever
//! the rules say, which is reported first.
//!
//! Groups are ranked by exposure, a number that grows with what each reach entry covers: `any`
//! destination counts as 1,000,000 names, a wildcard pattern as 1,000, an exact name as 1, an
//! address group by its addresses (capped at 1,000,000 per CIDR); times the ports it covers on
//! TCP and UDP (plus one for other transports). Flagged reach sorts first among equals.

use serde::Serialize;

use super::catalog::Catalog;
use super::space::Space;
use crate::model::{Action, DefaultAction, DstGroup, DstSpec, Mode, Policy, Rule, SrcSpec};

/// What one reach entry leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DstKind {
    /// `any`.
    Any,
    /// A WebGroup (by name).
    Webgroup,
    /// An AddressGroup.
    Addressgroup,
    /// A SmartGroup (east-west).
    Smartgroup,
}

/// One destination a group may reach, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    /// The destination group, or `any`.
    pub dst: String,
    /// Its kind.
    pub dst_kind: DstKind,
    /// `tcp`, `udp`, `any` (TCP and UDP on `ports`, and every transport when `ports` is
    /// `["any"]`), or `other` (transports without ports).
    pub protocol: &'static str,
    /// Ports as the policy language writes them, `["any"]` for all.
    pub ports: Vec<String>,
    /// The permitting rule, `default`, or `(log-only)`.
    pub rule: String,
    /// A watch rule observes (part of) this traffic.
    pub watch: bool,
    /// The watch rules that observe it.
    pub watched_by: Vec<String>,
    /// Destination groups that earlier deny or reject rules carve out of an `any`.
    pub except: Vec<String>,
    /// Earlier rules took part of the permitting rule's traffic (by ports or protocol).
    pub partial: bool,
    /// False for the reach that log-only mode adds: not a permit, nothing enforced at all.
    pub enforced: bool,
}

/// Why a reach entry is wider than it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagKind {
    /// `mode = "log-only"`: nothing is enforced.
    LogOnly,
    /// A watch rule that says deny or reject is followed by a permit of the same traffic:
    /// it reads like a deny and enforces nothing (the adversarial case when the permit is
    /// `any`).
    WatchOnlyDeny,
    /// A permit reaches an exfiltration-capable destination (the catalog), or `any`.
    Exfiltration,
    /// A permit with `dst = "any"`, or `default_action = "permit"`.
    AnyDestination,
    /// The permitting rule has `src = "any"`: it covers every group, present and future.
    AnySource,
    /// A permitted WebGroup has wildcard patterns: names nobody reviewed one by one.
    Wildcard,
    /// A permit covers a port range, or every port.
    PortRange,
}

/// One flag of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// What kind.
    pub kind: FlagKind,
    /// The rule concerned (or `default`, `(log-only)`).
    pub rule: String,
    /// The destination concerned.
    pub dst: String,
    /// One sentence for people.
    pub message: String,
}

/// The blast radius of one SmartGroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupRadius {
    /// The SmartGroup.
    pub name: String,
    /// Exposure score (see the module documentation); groups are sorted by it.
    pub exposure: u64,
    /// What it may reach, in rule order.
    pub reach: Vec<Reach>,
    /// What is wider than it looks, most serious first.
    pub flags: Vec<Flag>,
}

/// The blast radius of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlastRadius {
    /// Every SmartGroup (or the one asked for), most exposed first.
    pub groups: Vec<GroupRadius>,
}

/// A destination as a rule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dst {
    Any,
    Group(DstGroup),
}

fn applies(rule: &Rule, group: u32) -> bool {
    match &rule.src {
        SrcSpec::Any => true,
        SrcSpec::Groups(g) => g.contains(&group),
    }
}

fn dsts(rule: &Rule) -> Vec<Dst> {
    match &rule.dst {
        DstSpec::Any => vec![Dst::Any],
        DstSpec::Groups(g) => g.iter().map(|&d| Dst::Group(d)).collect(),
    }
}

/// Whether traffic a rule sends to `by` can be traffic to `to`, judged by names: `any` covers
/// everything, a group covers itself, and a group is part of `any`.
fn shares(by: Dst, to: Dst) -> bool {
    by == Dst::Any || to == Dst::Any || by == to
}

/// Whether two WebGroups share a name (a watch rule on `openrouter` observes part of a permit
/// of `ai-all`). Watch rules are few and groups small, so the pairwise check is cheap here.
fn names_overlap(policy: &Policy, a: Dst, b: Dst) -> bool {
    let (Dst::Group(DstGroup::Web(a)), Dst::Group(DstGroup::Web(b))) = (a, b) else {
        return false;
    };
    let (Some(a), Some(b)) = (
        policy.webgroups.get(a as usize),
        policy.webgroups.get(b as usize),
    ) else {
        return false;
    };
    a.patterns
        .iter()
        .any(|p| b.patterns.iter().any(|q| super::catalog::overlap(p, q)))
}

/// The blast radius of every SmartGroup of `policy` (or only `only`, when given and defined;
/// `None` when it is not), with `exfil` as the catalog of exfiltration-capable destinations.
pub fn blast_radius(policy: &Policy, exfil: &Catalog, only: Option<&str>) -> Option<BlastRadius> {
    let mut groups = Vec::new();
    for (i, g) in policy.smartgroups.iter().enumerate() {
        if only.is_some_and(|o| o != g.name) {
            continue;
        }
        groups.push(group_radius(policy, exfil, i as u32));
    }
    if only.is_some() && groups.is_empty() {
        return None;
    }
    groups.sort_by(|a, b| b.exposure.cmp(&a.exposure).then(a.name.cmp(&b.name)));
    Some(BlastRadius { groups })
}

fn dst_name(policy: &Policy, d: Dst) -> String {
    match d {
        Dst::Any => "any".to_owned(),
        Dst::Group(g) => policy.dst_group_name(g).to_owned(),
    }
}

fn dst_kind(d: Dst) -> DstKind {
    match d {
        Dst::Any => DstKind::Any,
        Dst::Group(DstGroup::Web(_)) => DstKind::Webgroup,
        Dst::Group(DstGroup::Address(_)) => DstKind::Addressgroup,
        Dst::Group(DstGroup::Smart(_)) => DstKind::Smartgroup,
    }
}

/// What one destination is worth in the exposure score.
fn dst_weight(policy: &Policy, d: Dst) -> u64 {
    const ANY: u64 = 1_000_000;
    let cidrs_weight = |cidrs: &[ipnet::IpNet]| {
        cidrs
            .iter()
            .map(|c| {
                let host_bits = u32::from(c.max_prefix_len() - c.prefix_len());
                if host_bits >= 20 {
                    ANY
                } else {
                    1u64 << host_bits
                }
            })
            .sum::<u64>()
            .max(1)
    };
    match d {
        Dst::Any => ANY,
        Dst::Group(DstGroup::Web(w)) => policy.webgroups.get(w as usize).map_or(1, |g| {
            g.patterns
                .iter()
                .map(|p| if p.is_exact() { 1 } else { 1000 })
                .sum::<u64>()
                .max(1)
        }),
        Dst::Group(DstGroup::Address(a)) => policy
            .addressgroups
            .get(a as usize)
            .map_or(1, |g| cidrs_weight(&g.cidrs)),
        Dst::Group(DstGroup::Smart(s)) => policy
            .smartgroups
            .get(s as usize)
            .map_or(1, |g| cidrs_weight(&g.cidrs)),
    }
}

/// A decided part of the group's traffic: destination, space, and whether it was a denial.
struct Decided {
    dst: Dst,
    space: Space,
    denies: bool,
}

fn group_radius(policy: &Policy, exfil: &Catalog, group: u32) -> GroupRadius {
    let name = policy.smartgroups[group as usize].name.clone();
    let mut reach = Vec::new();
    let mut flags = Vec::new();
    let mut exposure: u64 = 0;
    let mut decided: Vec<Decided> = Vec::new();
    // Watch rules seen so far that apply to the group: (rule index, destinations, space).
    let mut watches: Vec<(usize, Vec<Dst>, Space)> = Vec::new();

    if policy.mode == Mode::LogOnly {
        reach.push(Reach {
            dst: "any".to_owned(),
            dst_kind: DstKind::Any,
            protocol: "any",
            ports: vec!["any".to_owned()],
            rule: "(log-only)".to_owned(),
            watch: false,
            watched_by: Vec::new(),
            except: Vec::new(),
            partial: false,
            enforced: false,
        });
        exposure = exposure.saturating_add(1_000_000u64.saturating_mul(Space::full().weight()));
        flags.push(Flag {
            kind: FlagKind::LogOnly,
            rule: "(log-only)".to_owned(),
            dst: "any".to_owned(),
            message: "the policy is in log-only mode: every verdict is only logged, and this group reaches everything whatever the rules say".to_owned(),
        });
    }

    let emit = |reach: &mut Vec<Reach>,
                flags: &mut Vec<Flag>,
                exposure: &mut u64,
                rule: Option<&Rule>,
                d: Dst,
                left: &Space,
                partial: bool,
                decided: &[Decided],
                watches: &[(usize, Vec<Dst>, Space)]| {
        let rule_name = rule.map_or("default", |r| r.name.as_str()).to_owned();
        let dname = dst_name(policy, d);
        let watched: Vec<&Rule> = watches
            .iter()
            .filter(|(_, wd, ws)| {
                wd.iter()
                    .any(|&w| shares(w, d) || names_overlap(policy, w, d))
                    && ws.intersects(left)
            })
            .map(|(i, _, _)| &policy.rules[*i])
            .collect();
        let except: Vec<String> = if d == Dst::Any {
            let mut e: Vec<String> = decided
                .iter()
                .filter(|x| x.denies && x.dst != Dst::Any && x.space.intersects(left))
                .map(|x| dst_name(policy, x.dst))
                .collect();
            e.sort();
            e.dedup();
            e
        } else {
            Vec::new()
        };
        for (protocol, ports) in left.parts() {
            reach.push(Reach {
                dst: dname.clone(),
                dst_kind: dst_kind(d),
                protocol,
                ports: ports.to_strings(),
                rule: rule_name.clone(),
                watch: !watched.is_empty(),
                watched_by: watched.iter().map(|r| r.name.clone()).collect(),
                except: except.clone(),
                partial,
                enforced: true,
            });
        }
        *exposure = exposure.saturating_add(dst_weight(policy, d).saturating_mul(left.weight()));
        let mut flag = |kind: FlagKind, message: String| {
            flags.push(Flag {
                kind,
                rule: rule_name.clone(),
                dst: dname.clone(),
                message,
            });
        };
        for w in &watched {
            if w.action != Action::Permit {
                flag(
                    FlagKind::WatchOnlyDeny,
                    format!(
                        "watch rule `{}` says {} for this traffic (or part of it), but watch rules enforce nothing: `{}` permits it{}",
                        w.name,
                        w.action,
                        rule_name,
                        if d == Dst::Any { " to any destination" } else { "" }
                    ),
                );
            }
        }
        match d {
            Dst::Any => {
                flag(
                    FlagKind::AnyDestination,
                    if rule.is_none() {
                        "default_action = \"permit\": everything no rule denies is reachable"
                            .to_owned()
                    } else {
                        format!("`{rule_name}` permits any destination")
                    },
                );
                flag(
                    FlagKind::Exfiltration,
                    "any destination includes object storage, paste sites, tunnels and webhooks"
                        .to_owned(),
                );
            }
            Dst::Group(DstGroup::Web(w)) => {
                if let Some(g) = policy.webgroups.get(w as usize) {
                    let mut hits: Vec<String> = g
                        .patterns
                        .iter()
                        .flat_map(|p| {
                            exfil
                                .overlapping(p)
                                .into_iter()
                                .map(move |h| format!("{} ({} in {})", p, h.pattern, h.group))
                        })
                        .collect();
                    if exfil.groups.contains_key(&g.name) {
                        hits.insert(0, format!("the catalog group `{}` itself", g.name));
                    }
                    if !hits.is_empty() {
                        hits.truncate(5);
                        flag(
                            FlagKind::Exfiltration,
                            format!(
                                "`{}` reaches exfiltration-capable destinations: {}",
                                g.name,
                                hits.join(", ")
                            ),
                        );
                    }
                    let wild: Vec<&str> = g
                        .patterns
                        .iter()
                        .filter(|p| !p.is_exact())
                        .map(|p| p.as_str())
                        .take(5)
                        .collect();
                    if !wild.is_empty() {
                        flag(
                            FlagKind::Wildcard,
                            format!("`{}` has wildcard patterns: {}", g.name, wild.join(", ")),
                        );
                    }
                }
            }
            Dst::Group(DstGroup::Address(a)) => {
                if let Some(g) = policy.addressgroups.get(a as usize) {
                    if exfil.groups.contains_key(&g.name) {
                        flag(
                            FlagKind::Exfiltration,
                            format!("`{}` is named in the exfiltration-capable catalog", g.name),
                        );
                    }
                }
            }
            Dst::Group(DstGroup::Smart(_)) => {}
        }
        if rule.is_some_and(|r| r.src == SrcSpec::Any) {
            flag(
                FlagKind::AnySource,
                format!("`{rule_name}` has src = \"any\": it applies to every source, including groups added later"),
            );
        }
        let wide: Vec<String> = left
            .parts()
            .into_iter()
            .filter(|(p, ports)| *p != "other" && (ports.is_full() || ports.has_range()))
            .map(|(p, ports)| format!("{p} {ports}"))
            .collect();
        if !wide.is_empty() {
            flag(
                FlagKind::PortRange,
                format!("`{rule_name}` covers port ranges: {}", wide.join("; ")),
            );
        }
    };

    for (i, rule) in policy.rules.iter().enumerate() {
        if !applies(rule, group) {
            continue;
        }
        let space = Space::of_rule(rule.protocol, &rule.ports);
        if rule.watch {
            watches.push((i, dsts(rule), space));
            continue;
        }
        let rule_dsts = dsts(rule);
        for &d in &rule_dsts {
            let mut left = space.clone();
            for x in &decided {
                if x.dst == Dst::Any || x.dst == d {
                    left = left.minus(&x.space);
                }
            }
            if rule.action == Action::Permit && !left.is_empty() {
                let partial = left != space;
                emit(
                    &mut reach,
                    &mut flags,
                    &mut exposure,
                    Some(rule),
                    d,
                    &left,
                    partial,
                    &decided,
                    &watches,
                );
            }
        }
        for d in rule_dsts {
            decided.push(Decided {
                dst: d,
                space: space.clone(),
                denies: rule.action != Action::Permit,
            });
        }
    }
    if policy.default_action == DefaultAction::Permit {
        let mut left = Space::full();
        for x in &decided {
            if x.dst == Dst::Any {
                left = left.minus(&x.space);
            }
        }
        if !left.is_empty() {
            let partial = left != Space::full();
            emit(
                &mut reach,
                &mut flags,
                &mut exposure,
                None,
                Dst::Any,
                &left,
                partial,
                &decided,
                &watches,
            );
        }
    }
    flags.sort_by_key(|f| f.kind);
    flags.dedup();
    GroupRadius {
        name,
        exposure,
        reach,
        flags,
    }
}
