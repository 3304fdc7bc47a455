//! A least-privilege policy from observed flows.
//!
//! [`Recommender`] takes flows one by one (from decision records), with the policy in force
//! when they were seen. Each flow is counted under its source (the first SmartGroup of the
//! current policy that contains it, else its own address), its destination (the name seen,
//! else a SmartGroup for east-west traffic, else the address), its transport and its port.
//! Flows the current policy enforced a denial on are not counted: a recommendation widens
//! nothing that is denied today.
//!
//! [`Recommender::finish`] writes a policy that permits exactly those destinations:
//!
//! - names that a group of the provider catalog matches are permitted through that group
//!   (its definition is copied in, so the policy stands alone); every other name is listed
//!   exactly, never as a pattern, so nothing wider than what was seen is permitted (and no
//!   pattern can be a public-suffix wildcard);
//! - addresses as host routes (`/32`, `/128`) in an AddressGroup;
//! - one rule per source, transport and set of ports seen, `log = true`, default deny.
//!
//! Comments give each destination's flow count and first and last time seen. Memory is
//! bounded: at most [`MAX_ENTRIES`] distinct (source, destination, transport, port) entries
//! and [`MAX_HOSTS`] sources outside every SmartGroup are kept; what does not fit is counted
//! and reported in the summary, never silently dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use super::blast::{blast_radius, DstKind};
use super::catalog::Catalog;
use super::flows::Flow;
use super::space::PortSet;
use super::time::rfc3339;
use crate::compile::{CompiledPolicy, Query};
use crate::model::{Mode, Policy, PortRange, Selector, Transport};
use crate::name::{normalize_name, NamePattern};

/// Most distinct (source, destination, transport, port) entries kept.
pub const MAX_ENTRIES: usize = 200_000;
/// Most sources outside every SmartGroup given a group of their own.
pub const MAX_HOSTS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Src {
    Group(u32),
    Host(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dst {
    Name(String),
    Smart(u32),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    flows: u64,
    first: u64,
    last: u64,
}

impl Seen {
    fn new(t: u64) -> Seen {
        Seen {
            flows: 0,
            first: t,
            last: t,
        }
    }

    fn add(&mut self, other: &Seen) {
        self.flows += other.flows;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    fn comment(&self) -> String {
        format!(
            "{} flow{}, first {}, last {}",
            self.flows,
            if self.flows == 1 { "" } else { "s" },
            rfc3339(self.first),
            rfc3339(self.last)
        )
    }
}

/// What was left out of a recommendation, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Flows the current policy denied (enforced): not permitted by the recommendation.
    pub denied_today: u64,
    /// Flows of transports without ports (ICMP, ...): a rule for them would have to permit
    /// every TCP and UDP port too.
    pub without_ports: u64,
    /// Flows outside the group asked for.
    pub other_groups: u64,
    /// Flows past the bounds ([`MAX_ENTRIES`], [`MAX_HOSTS`]).
    pub over_bounds: u64,
}

/// A recommended policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// The policy, TOML.
    pub toml: String,
    /// What it would deny that the current policy permits, and what was left out, one line
    /// each.
    pub summary: Vec<String>,
    /// Flows counted into it.
    pub flows: u64,
}

/// Collects flows and writes the recommendation; see the module documentation.
#[derive(Debug)]
pub struct Recommender<'a> {
    current: &'a Policy,
    compiled: &'a CompiledPolicy,
    only: Option<u32>,
    seen: HashMap<(Src, Dst, Transport, u16), Seen>,
    hosts: BTreeSet<IpAddr>,
    skipped: Skipped,
    flows: u64,
}

/// IPv4-mapped IPv6 addresses as the IPv4 addresses they carry (a policy refuses mapped
/// networks, and IPv4 packets carry IPv4 addresses).
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl<'a> Recommender<'a> {
    /// A recommender for flows seen under `current` (compiled as `compiled`), for every
    /// SmartGroup or only `group`. `Err` when `group` is not a SmartGroup of `current`.
    pub fn new(
        current: &'a Policy,
        compiled: &'a CompiledPolicy,
        group: Option<&str>,
    ) -> Result<Recommender<'a>, String> {
        let only = match group {
            None => None,
            Some(g) => Some(
                current
                    .smartgroups
                    .iter()
                    .position(|s| s.name == g)
                    .ok_or_else(|| format!("`{g}` is not a smartgroup of the current policy"))?
                    as u32,
            ),
        };
        Ok(Recommender {
            current,
            compiled,
            only,
            seen: HashMap::new(),
            hosts: BTreeSet::new(),
            skipped: Skipped::default(),
            flows: 0,
        })
    }

    /// Counts one flow seen at `time_ms`; `denied` when the gateway enforced a denial on it
    /// (disposition `Blocked`).
    pub fn add(&mut self, flow: &Flow, time_ms: u64, denied: bool) {
        if denied {
            self.skipped.denied_today += 1;
            return;
        }
        let src_ip = canonical(flow.src);
        let dst_ip = canonical(flow.dst);
        let q = Query {
            src: src_ip,
            dst: dst_ip,
            transport: flow.transport,
            dst_port: flow.dst_port,
            name: None,
        };
        let v = self.compiled.evaluate(&q);
        let src_group = self
            .compiled
            .src_groups(&v)
            .next()
            .and_then(|n| self.current.smartgroups.iter().position(|g| g.name == n));
        if let Some(only) = self.only {
            if src_group != Some(only as usize) {
                self.skipped.other_groups += 1;
                return;
            }
        }
        if !flow.transport.has_ports() || flow.dst_port == 0 {
            self.skipped.without_ports += 1;
            return;
        }
        let src = match src_group {
            Some(g) => Src::Group(g as u32),
            None => {
                if !self.hosts.contains(&src_ip) {
                    if self.hosts.len() >= MAX_HOSTS {
                        self.skipped.over_bounds += 1;
                        return;
                    }
                    self.hosts.insert(src_ip);
                }
                Src::Host(src_ip)
            }
        };
        let name = flow.name.as_deref().and_then(|n| {
            // Only a name in normal form, and one that is a valid exact pattern, can be
            // listed; anything else is decided by address, as the gateway does.
            let normal = normalize_name(n).ok()?;
            (normal == n && NamePattern::parse(n).is_ok_and(|p| p.is_exact())).then(|| n.to_owned())
        });
        let dst = match name {
            Some(n) => Dst::Name(n),
            None => {
                let east_west = self
                    .compiled
                    .dst_groups(&v)
                    .find_map(|n| self.current.smartgroups.iter().position(|g| g.name == n));
                match east_west {
                    Some(g) => Dst::Smart(g as u32),
                    None => Dst::Addr(dst_ip),
                }
            }
        };
        let key = (src, dst, flow.transport, flow.dst_port);
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_ENTRIES {
            self.skipped.over_bounds += 1;
            return;
        }
        let e = self.seen.entry(key).or_insert_with(|| Seen::new(time_ms));
        e.flows += 1;
        e.first = e.first.min(time_ms);
        e.last = e.last.max(time_ms);
        self.flows += 1;
    }

    /// What was left out so far.
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Writes the recommended policy. `providers` is the catalog whose groups express the
    /// names they match (`providers_label` names it in comments); `exfil` marks destinations
    /// that deserve a second look; `header` lines open the file as comments.
    pub fn finish(
        self,
        providers: &Catalog,
        providers_label: &str,
        exfil: &Catalog,
        header: &[String],
    ) -> Recommendation {
        let current = self.current;
        // Per source: per destination: per transport: ports seen, and the totals.
        type PerDst = BTreeMap<Dst, (BTreeMap<u8, BTreeSet<u16>>, Seen)>;
        let mut by_src: BTreeMap<Src, PerDst> = BTreeMap::new();
        for ((src, dst, transport, port), seen) in &self.seen {
            let per = by_src.entry(src.clone()).or_default();
            let e = per
                .entry(dst.clone())
                .or_insert_with(|| (BTreeMap::new(), Seen::new(seen.first)));
            e.0.entry(transport.protocol_number())
                .or_default()
                .insert(*port);
            e.1.add(seen);
        }

        let mut used: BTreeSet<String> =
            current.smartgroups.iter().map(|g| g.name.clone()).collect();
        used.extend(providers.groups.keys().cloned());
        let mut unique = |base: String| -> String {
            let mut base: String = base.chars().take(110).collect();
            while base.ends_with('-') {
                base.pop();
            }
            let mut name = base.clone();
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        };

        let mut out = String::new();
        for line in header {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "#");
        let _ = writeln!(
            out,
            "# Every permit lists only what was seen: names exactly, or through a group of the"
        );
        let _ = writeln!(
            out,
            "# provider catalog ({providers_label}) that matches them; addresses as host routes."
        );
        let _ = writeln!(out, "\n[policy]");
        let _ = writeln!(out, "default_action = \"deny\"");
        let _ = writeln!(out, "mode = \"enforce\"");
        if current.quic != crate::model::QuicMode::Inspect {
            let _ = writeln!(out, "quic = \"{}\"", current.quic.as_str());
        }

        // Sources: the SmartGroups that had traffic (copied), and hosts in none.
        let src_name = |s: &Src| match s {
            Src::Group(g) => current.smartgroups[*g as usize].name.clone(),
            Src::Host(ip) => format!("host-{}", ip.to_string().replace(':', "-")),
        };
        // SmartGroups named as east-west destinations are copied too, or the rules naming
        // them would not load.
        let mut copied: BTreeSet<u32> = BTreeSet::new();
        for src in by_src.keys() {
            if let Src::Group(g) = src {
                copied.insert(*g);
            }
        }
        let destinations: BTreeSet<u32> = by_src
            .values()
            .flat_map(|per| per.keys())
            .filter_map(|d| match d {
                Dst::Smart(g) => Some(*g),
                _ => None,
            })
            .filter(|g| !copied.contains(g))
            .collect();
        for src in by_src.keys() {
            match src {
                Src::Group(g) => {
                    copy_group(&mut out, current, *g, "Copied from the current policy.")
                }
                Src::Host(ip) => {
                    let _ = writeln!(out, "\n# A source in no SmartGroup of the current policy.");
                    let _ = writeln!(out, "[smartgroups.{}]", key(&src_name(src)));
                    let _ = writeln!(out, "cidrs = [{}]", quote(&host_cidr(*ip)));
                }
            }
        }
        for g in destinations {
            copy_group(
                &mut out,
                current,
                g,
                "Copied from the current policy: a destination of east-west traffic.",
            );
        }

        let mut catalog_used: BTreeMap<String, ()> = BTreeMap::new();
        let mut groups_text = String::new();
        let mut rules_text = String::new();
        let mut priority = 1000u32;
        // Per source: for the summary, which destination names it keeps.
        let mut kept: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (src, per) in &by_src {
            let sname = src_name(src);
            let kept_names = kept.entry(sname.clone()).or_default();
            // Per (transport, ports): the destinations permitted by one rule.
            #[derive(Default)]
            struct RuleDsts {
                catalog: BTreeMap<String, Vec<(String, Seen)>>,
                names: Vec<(String, Seen, Vec<String>)>,
                addrs: Vec<(IpAddr, Seen)>,
                smart: Vec<(String, Seen)>,
            }
            let mut rules: BTreeMap<(u8, Vec<u16>), RuleDsts> = BTreeMap::new();
            // Catalog groups gather the ports of all their names, so a group sits in one rule
            // per transport.
            let mut catalog_ports: BTreeMap<(String, u8), BTreeSet<u16>> = BTreeMap::new();
            let mut catalog_of: BTreeMap<&str, String> = BTreeMap::new();
            for (dst, (transports, _)) in per {
                if let Dst::Name(n) = dst {
                    if let Some(g) = providers.groups_matching(n).first() {
                        catalog_of.insert(n.as_str(), (*g).to_owned());
                        for (t, ports) in transports {
                            catalog_ports
                                .entry(((*g).to_owned(), *t))
                                .or_default()
                                .extend(ports.iter().copied());
                        }
                    }
                }
            }
            for (dst, (transports, seen)) in per {
                for (t, ports) in transports {
                    match dst {
                        Dst::Name(n) => {
                            kept_names.insert(n.clone());
                            if let Some(g) = catalog_of.get(n.as_str()) {
                                let ports: Vec<u16> =
                                    catalog_ports[&(g.clone(), *t)].iter().copied().collect();
                                rules
                                    .entry((*t, ports))
                                    .or_default()
                                    .catalog
                                    .entry(g.clone())
                                    .or_default()
                                    .push((n.clone(), *seen));
                            } else {
                                let hits: Vec<String> = NamePattern::parse(n)
                                    .map(|p| exfil.overlapping(&p))
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|h| h.group)
                                    .collect();
                                rules
                                    .entry((*t, ports.iter().copied().collect()))
                                    .or_default()
                                    .names
                                    .push((n.clone(), *seen, hits));
                            }
                        }
                        Dst::Addr(ip) => {
                            kept_names.insert(ip.to_string());
                            rules
                                .entry((*t, ports.iter().copied().collect()))
                                .or_default()
                                .addrs
                                .push((*ip, *seen));
                        }
                        Dst::Smart(g) => {
                            let name = current.smartgroups[*g as usize].name.clone();
                            kept_names.insert(name.clone());
                            rules
                                .entry((*t, ports.iter().copied().collect()))
                                .or_default()
                                .smart
                                .push((name, *seen));
                        }
                    }
                }
            }
            for ((t, ports), dsts) in rules {
                let proto = if t == 17 { "udp" } else { "tcp" };
                let port_label = if ports.len() <= 3 {
                    ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join("-")
                } else {
                    format!("{}-and-{}-more", ports[0], ports.len() - 1)
                };
                let rule_name = unique(format!("{sname}-{proto}-{port_label}"));
                let mut dst_list: Vec<String> = Vec::new();
                let mut comments: Vec<String> = Vec::new();
                for (g, names) in &dsts.catalog {
                    catalog_used.insert(g.clone(), ());
                    dst_list.push(g.clone());
                    for (n, seen) in names.iter().take(20) {
                        comments.push(format!("{g}: {n} ({})", seen.comment()));
                    }
                    if names.len() > 20 {
                        comments.push(format!("{g}: and {} more names", names.len() - 20));
                    }
                }
                if !dsts.names.is_empty() {
                    let wg = unique(format!("{rule_name}-names"));
                    let _ = writeln!(groups_text, "\n[webgroups.{}]", key(&wg));
                    let _ = writeln!(groups_text, "domains = [");
                    for (n, seen, exfil_hits) in &dsts.names {
                        let note = if exfil_hits.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; EXFILTRATION-CAPABLE ({}): review before permitting",
                                exfil_hits.join(", ")
                            )
                        };
                        let _ =
                            writeln!(groups_text, "  {},  # {}{note}", quote(n), seen.comment());
                    }
                    let _ = writeln!(groups_text, "]");
                    dst_list.push(wg);
                }
                if !dsts.addrs.is_empty() {
                    let ag = unique(format!("{rule_name}-addresses"));
                    let _ = writeln!(groups_text, "\n[addressgroups.{}]", key(&ag));
                    let _ = writeln!(groups_text, "cidrs = [");
                    for (ip, seen) in &dsts.addrs {
                        let _ = writeln!(
                            groups_text,
                            "  {},  # {}",
                            quote(&host_cidr(*ip)),
                            seen.comment()
                        );
                    }
                    let _ = writeln!(groups_text, "]");
                    dst_list.push(ag);
                }
                for (g, seen) in &dsts.smart {
                    comments.push(format!("{g} (east-west): {}", seen.comment()));
                    dst_list.push(g.clone());
                }
                let _ = writeln!(rules_text);
                for c in comments {
                    let _ = writeln!(rules_text, "# {c}");
                }
                let _ = writeln!(rules_text, "[[rules]]");
                let _ = writeln!(rules_text, "name = {}", quote(&rule_name));
                let _ = writeln!(rules_text, "priority = {priority}");
                let _ = writeln!(rules_text, "src = [{}]", quote(&sname));
                let dq: Vec<String> = dst_list.iter().map(|d| quote(d)).collect();
                let _ = writeln!(rules_text, "dst = [{}]", dq.join(", "));
                let _ = writeln!(rules_text, "protocol = \"{proto}\"");
                let ranges: Vec<PortRange> = ports
                    .iter()
                    .map(|&p| PortRange { start: p, end: p })
                    .collect();
                let ps: Vec<String> = PortSet::from_ranges(&ranges)
                    .to_strings()
                    .iter()
                    .map(|p| quote(p))
                    .collect();
                let _ = writeln!(rules_text, "ports = [{}]", ps.join(", "));
                let _ = writeln!(rules_text, "action = \"permit\"");
                let _ = writeln!(rules_text, "log = true");
                priority = priority.saturating_add(10);
            }
        }
        for g in catalog_used.keys() {
            let _ = writeln!(
                out,
                "\n# From the catalog {providers_label} (version {}).",
                providers.version
            );
            let _ = writeln!(out, "[webgroups.{}]", key(g));
            let _ = writeln!(out, "domains = [");
            for p in &providers.groups[g] {
                let _ = writeln!(out, "  {},", quote(p.as_str()));
            }
            let _ = writeln!(out, "]");
        }
        out.push_str(&groups_text);
        out.push_str(&rules_text);

        let summary = summarize(current, exfil, self.only, &kept, &self.skipped);
        Recommendation {
            toml: out,
            summary,
            flows: self.flows,
        }
    }
}

/// What the recommendation takes away from the current policy, per SmartGroup, from the
/// current policy's blast radius; and what was left out.
fn summarize(
    current: &Policy,
    exfil: &Catalog,
    only: Option<u32>,
    kept: &BTreeMap<String, BTreeSet<String>>,
    skipped: &Skipped,
) -> Vec<String> {
    let mut lines = Vec::new();
    if current.mode == Mode::LogOnly {
        lines.push(
            "the current policy is log-only: everything is forwarded today, and everything not listed here would be denied"
                .to_owned(),
        );
    }
    let only_name = only.map(|i| current.smartgroups[i as usize].name.as_str());
    if let Some(radius) = blast_radius(current, exfil, only_name) {
        for g in &radius.groups {
            let Some(names) = kept.get(&g.name) else {
                let enforced: Vec<_> = g.reach.iter().filter(|r| r.enforced).collect();
                if !enforced.is_empty() {
                    lines.push(format!(
                        "{}: no traffic seen; the {} destination(s) permitted today would all be denied",
                        g.name,
                        enforced.len()
                    ));
                } else {
                    lines.push(format!("{}: no traffic seen", g.name));
                }
                continue;
            };
            for r in g.reach.iter().filter(|r| r.enforced) {
                let traffic = if r.protocol == "any" && r.ports == ["any"] {
                    "every protocol and port".to_owned()
                } else {
                    format!("{} {}", r.protocol, r.ports.join(","))
                };
                let what = format!("{} ({traffic}) through `{}`", r.dst, r.rule);
                match r.dst_kind {
                    DstKind::Any => lines.push(format!(
                        "{}: {what} would be narrowed to the {} destination(s) seen",
                        g.name,
                        names.len()
                    )),
                    DstKind::Webgroup => {
                        let patterns = current
                            .webgroups
                            .iter()
                            .find(|w| w.name == r.dst)
                            .map(|w| w.patterns.clone())
                            .unwrap_or_default();
                        let hit = names
                            .iter()
                            .filter(|n| patterns.iter().any(|p| p.matches(n)))
                            .count();
                        let every_name_seen = patterns
                            .iter()
                            .all(|p| p.is_exact() && names.contains(p.as_str()));
                        if every_name_seen {
                            // Nothing of it is taken away.
                        } else if hit == 0 {
                            lines.push(format!(
                                "{}: {what} would be denied: no traffic seen to it",
                                g.name
                            ));
                        } else {
                            lines.push(format!(
                                "{}: {what} would be narrowed to the {hit} name(s) seen (it has {} pattern(s))",
                                g.name,
                                patterns.len()
                            ));
                        }
                    }
                    DstKind::Addressgroup | DstKind::Smartgroup => {
                        if !names.contains(&r.dst) {
                            lines.push(format!(
                                "{}: {what} would be narrowed to the addresses seen, if any",
                                g.name
                            ));
                        }
                    }
                }
            }
        }
    }
    if skipped.denied_today > 0 {
        lines.push(format!(
            "{} flow(s) denied today stay denied (not permitted by the recommendation)",
            skipped.denied_today
        ));
    }
    if skipped.without_ports > 0 {
        lines.push(format!(
            "{} flow(s) of transports without ports (ICMP, ...) or to port 0 are not permitted: a rule for them would permit every TCP and UDP port as well; add one by hand if they are needed",
            skipped.without_ports
        ));
    }
    if skipped.over_bounds > 0 {
        lines.push(format!(
            "{} flow(s) were past the recommender's bounds ({MAX_ENTRIES} destinations, {MAX_HOSTS} sources outside any SmartGroup) and are not permitted: narrow the window or use --group",
            skipped.over_bounds
        ));
    }
    lines
}

/// A group name as a TOML key: bare when it can be, quoted otherwise (names may hold `.`,
/// which a bare key would read as a nested table).
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_owned()
    } else {
        quote(name)
    }
}

/// Writes a SmartGroup of the current policy, as defined there.
fn copy_group(out: &mut String, current: &Policy, g: u32, comment: &str) {
    let g = &current.smartgroups[g as usize];
    let _ = writeln!(out, "\n# {comment}");
    let _ = writeln!(out, "[smartgroups.{}]", key(&g.name));
    if let Some(d) = &g.description {
        let _ = writeln!(out, "description = {}", quote(d));
    }
    let cidrs: Vec<String> = g.cidrs.iter().map(|c| quote(&c.to_string())).collect();
    let _ = writeln!(out, "cidrs = [{}]", cidrs.join(", "));
    if !g.selectors.is_empty() {
        let _ = writeln!(out, "selectors = [");
        for s in &g.selectors {
            let _ = writeln!(out, "  {},", selector(s));
        }
        let _ = writeln!(out, "]");
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn inline_map(m: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

/// A selector as an inline table, as the policy language writes it.
fn selector(s: &Selector) -> String {
    let mut parts = Vec::new();
    if !s.tags.is_empty() {
        parts.push(format!("tags = {}", inline_map(&s.tags)));
    }
    if let Some(k) = &s.k8s {
        let mut kp = Vec::new();
        if let Some(ns) = &k.namespace {
            kp.push(format!("namespace = {}", quote(ns)));
        }
        if !k.labels.is_empty() {
            kp.push(format!("labels = {}", inline_map(&k.labels)));
        }
        parts.push(format!("k8s = {{ {} }}", kp.join(", ")));
    }
    format!("{{ {} }}", parts.join(", "))
}
