//! The policy model: what a policy says, independent of where it came from (a TOML file, a
//! controller snapshot) and of how it is evaluated.
//!
//! A [`Policy`] built by [`crate::load_policy_file`] is validated: every reference resolves, rules
//! are sorted by priority and priorities are unique. A `Policy` built by hand (for example from a
//! controller snapshot) should go through [`Policy::check`] before [`crate::compile()`]; compiling an
//! unchecked policy never panics, but references that do not resolve match nothing.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;

use crate::echo::Echo;
use crate::load::MAX_REPORTED_ERRORS;
use crate::name::NamePattern;

/// What a rule (or the default) does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward the traffic.
    Permit,
    /// Drop silently.
    Deny,
    /// Refuse actively: TCP RST, or ICMP unreachable for other transports.
    Reject,
}

impl Action {
    /// The policy-language keyword: `permit`, `deny` or `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Permit => "permit",
            Action::Deny => "deny",
            Action::Reject => "reject",
        }
    }

    /// True for [`Action::Permit`].
    pub fn is_permit(self) -> bool {
        self == Action::Permit
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether verdicts are enforced or only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Verdicts are enforced.
    #[default]
    Enforce,
    /// Verdicts are computed and logged, and everything is forwarded.
    LogOnly,
}

impl Mode {
    /// The policy-language keyword: `enforce` or `log-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::LogOnly => "log-only",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the gateway does with QUIC (UDP to port 443): the `quic` key of `[policy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuicMode {
    /// Read the server name from the client's Initial packets and decide on it, as for TLS.
    #[default]
    Inspect,
    /// Refuse QUIC long-header packets with ICMP port unreachable, so that clients fall back to
    /// TLS over TCP, where every connection shows its name.
    Block,
}

impl QuicMode {
    /// The policy-language keyword: `inspect` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuicMode::Inspect => "inspect",
            QuicMode::Block => "block",
        }
    }
}

/// Whether the destination address of a flow permitted by name must be one the name resolves
/// to: the `sni_dns_check` key of `[policy]`. The client writes the TLS SNI and the HTTP Host
/// itself, so without this check a workload allowed to reach one name can reach any address by
/// claiming that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum SniDnsCheck {
    /// No check.
    Off,
    /// Check, let a mismatch through and record it (disposition `Detected`). The default: it
    /// shows the mismatches CDNs and geo-DNS can cause before anything is enforced.
    #[default]
    Log,
    /// Check, and refuse a flow whose address the name does not resolve to, or whose name cannot
    /// be resolved in time.
    Enforce,
}

impl SniDnsCheck {
    /// The policy-language keyword: `enforce`, `log` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            SniDnsCheck::Off => "off",
            SniDnsCheck::Log => "log",
            SniDnsCheck::Enforce => "enforce",
        }
    }

    /// The keyword's value, if it is one.
    pub fn parse(s: &str) -> Option<SniDnsCheck> {
        match s {
            "off" => Some(SniDnsCheck::Off),
            "log" => Some(SniDnsCheck::Log),
            "enforce" => Some(SniDnsCheck::Enforce),
            _ => None,
        }
    }
}

impl fmt::Display for SniDnsCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transport of a packet, from its IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// IP protocol 6.
    Tcp,
    /// IP protocol 17.
    Udp,
    /// Any other IP protocol number (ICMP, ICMPv6, GRE, ...). Has no ports.
    Other(u8),
}

impl Transport {
    /// Maps an IP protocol number (IPv4 protocol / IPv6 next header) to a transport.
    pub fn from_protocol_number(number: u8) -> Transport {
        match number {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            other => Transport::Other(other),
        }
    }

    /// The IP protocol number.
    pub fn protocol_number(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
            Transport::Other(n) => n,
        }
    }

    /// True when the transport carries ports (TCP and UDP).
    pub fn has_ports(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Udp)
    }
}

impl From<u8> for Transport {
    fn from(number: u8) -> Transport {
        Transport::from_protocol_number(number)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp => f.write_str("tcp"),
            Transport::Udp => f.write_str("udp"),
            Transport::Other(n) => write!(f, "ip-proto-{n}"),
        }
    }
}

/// The `protocol` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// Every transport (TCP, UDP, and, when the rule lists no ports, all others).
    #[default]
    Any,
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
}

impl Protocol {
    /// The policy-language keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Whether a packet of this transport can match the protocol.
    pub fn matches(self, transport: Transport) -> bool {
        match self {
            Protocol::Any => true,
            Protocol::Tcp => transport == Transport::Tcp,
            Protocol::Udp => transport == Transport::Udp,
        }
    }
}

/// An inclusive range of destination ports, `start <= end`, both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// The `ports` of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Ports {
    /// No port condition. Matches transports without ports too.
    #[default]
    Any,
    /// The destination port must lie in one of the ranges; only TCP and UDP can match.
    Ranges(Vec<PortRange>),
}

impl Ports {
    /// Whether a packet with this transport and destination port matches.
    pub fn matches(&self, transport: Transport, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Ranges(ranges) => {
                transport.has_ports() && ranges.iter().any(|r| r.contains(port))
            }
        }
    }
}

/// A selector of a SmartGroup: workloads whose inventory entry carries all the given tags and,
/// when `k8s` is set, runs in that namespace with those labels. Resolved to CIDRs by the
/// controller; a gateway evaluating a local file only uses the SmartGroup's `cidrs`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Cloud tags that must all be present with these values.
    pub tags: BTreeMap<String, String>,
    /// Kubernetes conditions, if any.
    pub k8s: Option<K8sSelector>,
}

/// The Kubernetes part of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct K8sSelector {
    /// The namespace the workload must run in, if set.
    pub namespace: Option<String>,
    /// Labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
}

/// Who: a named set of source identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartGroup {
    /// Unique among all groups of the policy.
    pub name: String,
    /// Addresses of the members (network addresses: host bits are zero).
    pub cidrs: Vec<IpNet>,
    /// Selectors for the controller to resolve into `cidrs`.
    pub selectors: Vec<Selector>,
    /// Free text.
    pub description: Option<String>,
}

/// Where, by name: a named set of name patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebGroup {
    /// Unique among all groups of the policy.
    pub name: String,
    /// Normalised patterns.
    pub patterns: Vec<NamePattern>,
    /// Free text.
    pub description: Option<String>,
}

/// Where, by address: a named set of CIDRs (threat feeds, partner ranges, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressGroup {
    /// Unique among all groups of the policy.
    pub name: String,
    /// Network addresses (host bits are zero).
    pub cidrs: Vec<IpNet>,
    /// Free text.
    pub description: Option<String>,
}

/// The `src` of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SrcSpec {
    /// `"any"`: every source.
    Any,
    /// Indices into [`Policy::smartgroups`]; the rule matches a source in any of them.
    Groups(Vec<u32>),
}

/// One destination group a rule refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DstGroup {
    /// Index into [`Policy::webgroups`]: matches by name.
    Web(u32),
    /// Index into [`Policy::addressgroups`]: matches by destination address.
    Address(u32),
    /// Index into [`Policy::smartgroups`]: matches by destination address.
    Smart(u32),
}

/// The `dst` of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DstSpec {
    /// `"any"`: every destination.
    Any,
    /// The rule matches when any of the groups matches the destination.
    Groups(Vec<DstGroup>),
}

/// One rule. Rules are evaluated in [`Policy::rules`] order; the first that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique among the rules of the policy.
    pub name: String,
    /// Lower runs first; unique.
    pub priority: u32,
    /// Who.
    pub src: SrcSpec,
    /// Where.
    pub dst: DstSpec,
    /// Which transport.
    pub protocol: Protocol,
    /// Which destination ports.
    pub ports: Ports,
    /// What to do.
    pub action: Action,
    /// Log allowed flows too (denied flows are always logged).
    pub log: bool,
    /// A watch rule reports what it would do and enforces nothing; evaluation goes on to the
    /// next rules for the enforced verdict.
    pub watch: bool,
    /// Free text.
    pub description: Option<String>,
}

/// A whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// What happens when no rule matches.
    pub default_action: DefaultAction,
    /// Enforce or only log.
    pub mode: Mode,
    /// Inspect or block QUIC.
    pub quic: QuicMode,
    /// Whether a name's permit needs the destination address to belong to the name.
    pub sni_dns_check: SniDnsCheck,
    /// Source identities (and east-west destinations).
    pub smartgroups: Vec<SmartGroup>,
    /// Destinations by name.
    pub webgroups: Vec<WebGroup>,
    /// Destinations by address.
    pub addressgroups: Vec<AddressGroup>,
    /// Rules sorted by ascending priority.
    pub rules: Vec<Rule>,
}

/// The `default_action` of a policy: `deny` (the default) or `permit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DefaultAction {
    /// Drop what no rule permits.
    #[default]
    Deny,
    /// Forward what no rule denies.
    Permit,
}

impl DefaultAction {
    /// The action the default gives.
    pub fn action(self) -> Action {
        match self {
            DefaultAction::Deny => Action::Deny,
            DefaultAction::Permit => Action::Permit,
        }
    }
}

/// A structural problem of a hand-built [`Policy`], found by [`Policy::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Checks the invariants that [`crate::load_policy_str`] guarantees: unique group and rule
    /// names, references in range, non-empty `src` / `dst`, ports valid, rules sorted by unique
    /// priority, CIDRs without host bits. Returns every problem found.
    pub fn check(&self) -> Result<(), Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut names = std::collections::HashSet::new();
        let group_names = self
            .smartgroups
            .iter()
            .map(|g| &g.name)
            .chain(self.webgroups.iter().map(|g| &g.name))
            .chain(self.addressgroups.iter().map(|g| &g.name));
        for name in group_names {
            if name == "any" || name.is_empty() {
                errors.push(PolicyError(format!("invalid group name `{}`", Echo(name))));
            }
            if !names.insert(name.as_str()) {
                errors.push(PolicyError(format!(
                    "group `{}` is defined more than once",
                    Echo(name)
                )));
            }
        }
        let cidrs = self
            .smartgroups
            .iter()
            .flat_map(|g| g.cidrs.iter().map(move |c| (&g.name, c)))
            .chain(
                self.addressgroups
                    .iter()
                    .flat_map(|g| g.cidrs.iter().map(move |c| (&g.name, c))),
            );
        for (name, cidr) in cidrs {
            if cidr.trunc() != *cidr {
                errors.push(PolicyError(format!(
                    "group `{}`: CIDR {cidr} has host bits set",
                    Echo(name)
                )));
            }
            if let Some(v4) = crate::load::ipv4_mapped_equivalent(cidr) {
                errors.push(PolicyError(format!(
                    "group `{}`: CIDR {cidr} is IPv4-mapped and would never match; use {v4}",
                    Echo(name)
                )));
            }
        }
        let mut rule_names = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule_names.insert(rule.name.as_str()) {
                errors.push(PolicyError(format!(
                    "rule `{}` is defined more than once",
                    Echo(&rule.name)
                )));
            }
            if i > 0 && self.rules[i - 1].priority >= rule.priority {
                errors.push(PolicyError(format!(
                    "rule `{}`: rules must be sorted by strictly increasing priority",
                    Echo(&rule.name)
                )));
            }
            match &rule.src {
                SrcSpec::Any => {}
                SrcSpec::Groups(g) if g.is_empty() => {
                    errors.push(PolicyError(format!(
                        "rule `{}`: empty src",
                        Echo(&rule.name)
                    )));
                }
                SrcSpec::Groups(g) => {
                    if g.iter().any(|&i| i as usize >= self.smartgroups.len()) {
                        errors.push(PolicyError(format!(
                            "rule `{}`: src refers to a smartgroup that does not exist",
                            Echo(&rule.name)
                        )));
                    }
                }
            }
            match &rule.dst {
                DstSpec::Any => {}
                DstSpec::Groups(g) if g.is_empty() => {
                    errors.push(PolicyError(format!(
                        "rule `{}`: empty dst",
                        Echo(&rule.name)
                    )));
                }
                DstSpec::Groups(g) => {
                    let bad = g.iter().any(|d| match *d {
                        DstGroup::Web(i) => i as usize >= self.webgroups.len(),
                        DstGroup::Address(i) => i as usize >= self.addressgroups.len(),
                        DstGroup::Smart(i) => i as usize >= self.smartgroups.len(),
                    });
                    if bad {
                        errors.push(PolicyError(format!(
                            "rule `{}`: dst refers to a group that does not exist",
                            Echo(&rule.name)
                        )));
                    }
                }
            }
            if let Ports::Ranges(ranges) = &rule.ports {
                if ranges.is_empty() || ranges.iter().any(|r| r.start == 0 || r.start > r.end) {
                    errors.push(PolicyError(format!(
                        "rule `{}`: invalid port ranges",
                        Echo(&rule.name)
                    )));
                }
            }
        }
        if errors.len() > MAX_REPORTED_ERRORS {
            // A snapshot is input like a file: its errors are capped the same way.
            let more = errors.len() - MAX_REPORTED_ERRORS;
            errors.truncate(MAX_REPORTED_ERRORS);
            errors.push(PolicyError(format!(
                "and {more} more errors (only the first {MAX_REPORTED_ERRORS} are reported)"
            )));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The name of the group a [`DstGroup`] refers to (`"?"` when out of range).
    pub fn dst_group_name(&self, group: DstGroup) -> &str {
        let name = match group {
            DstGroup::Web(i) => self.webgroups.get(i as usize).map(|g| g.name.as_str()),
            DstGroup::Address(i) => self.addressgroups.get(i as usize).map(|g| g.name.as_str()),
            DstGroup::Smart(i) => self.smartgroups.get(i as usize).map(|g| g.name.as_str()),
        };
        name.unwrap_or("?")
    }

    /// Total number of name patterns over all WebGroups.
    pub fn pattern_count(&self) -> usize {
        self.webgroups.iter().map(|g| g.patterns.len()).sum()
    }

    /// Total number of CIDRs over all SmartGroups and AddressGroups.
    pub fn cidr_count(&self) -> usize {
        self.smartgroups
            .iter()
            .map(|g| g.cidrs.len())
            .sum::<usize>()
            + self
                .addressgroups
                .iter()
                .map(|g| g.cidrs.len())
                .sum::<usize>()
    }
}
