//! Conversion between the wire [`Policy`](v1::Policy) and the policy model.
//!
//! This is the edge the style guide asks for: `policy-engine` knows nothing of protobuf, and the
//! generated types know nothing of the model. The controller converts a validated model into a
//! snapshot ([`policy_to_proto`]); the gateway converts a received snapshot back
//! ([`policy_from_proto`]), which checks everything a hostile or buggy peer could get wrong and
//! gathers every error rather than stopping at the first, then runs [`Policy::check`].
//!
//! Rules name groups on the wire (the model uses indices), so a snapshot stays readable in logs
//! and stable when groups are reordered.

use std::collections::HashMap;

use ipnet::IpNet;
use policy_engine::{
    Action, AddressGroup, DefaultAction, DstGroup, DstSpec, Mode, NamePattern, Policy, PortRange,
    Ports, Protocol, QuicMode, Rule, SmartGroup, SniDnsCheck, SrcSpec, WebGroup,
};
use sha2::{Digest, Sha256};

use crate::v1;

/// Most entries of any list in a snapshot (groups, rules, CIDRs or patterns of one group). Far
/// above real policies; it bounds what a peer can make the converter allocate.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Why a wire policy is not a valid policy: every problem, one per entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid snapshot: {}", .0.join("; "))]
pub struct ConvertError(pub Vec<String>);

/// `sha256:` and the hex digest of `bytes`: how versions are named in the store and in logs.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The wire form of a model policy. Selectors are not sent: the controller has already resolved
/// them into each SmartGroup's CIDRs.
pub fn policy_to_proto(policy: &Policy) -> v1::Policy {
    let smart_name = |i: u32| {
        policy
            .smartgroups
            .get(i as usize)
            .map_or_else(String::new, |g| g.name.clone())
    };
    v1::Policy {
        default_action: match policy.default_action {
            DefaultAction::Deny => v1::Action::Deny as i32,
            DefaultAction::Permit => v1::Action::Permit as i32,
        },
        mode: match policy.mode {
            Mode::Enforce => v1::Mode::Enforce as i32,
            Mode::LogOnly => v1::Mode::LogOnly as i32,
        },
        quic: match policy.quic {
            QuicMode::Inspect => v1::Quic::Inspect as i32,
            QuicMode::Block => v1::Quic::Block as i32,
        },
        sni_dns_check: match policy.sni_dns_check {
            SniDnsCheck::Enforce => v1::SniDnsCheck::Enforce as i32,
            SniDnsCheck::Log => v1::SniDnsCheck::Log as i32,
            SniDnsCheck::Off => v1::SniDnsCheck::Off as i32,
        },
        smartgroups: policy
            .smartgroups
            .iter()
            .map(|g| v1::SmartGroup {
                name: g.name.clone(),
                cidrs: g.cidrs.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        webgroups: policy
            .webgroups
            .iter()
            .map(|g| v1::WebGroup {
                name: g.name.clone(),
                domains: g.patterns.iter().map(|p| p.as_str().to_string()).collect(),
            })
            .collect(),
        addressgroups: policy
            .addressgroups
            .iter()
            .map(|g| v1::AddressGroup {
                name: g.name.clone(),
                cidrs: g.cidrs.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        rules: policy
            .rules
            .iter()
            .map(|rule| v1::Rule {
                name: rule.name.clone(),
                priority: rule.priority,
                src: match &rule.src {
                    SrcSpec::Any => vec!["any".to_string()],
                    SrcSpec::Groups(groups) => groups.iter().map(|&i| smart_name(i)).collect(),
                },
                dst: match &rule.dst {
                    DstSpec::Any => vec!["any".to_string()],
                    DstSpec::Groups(groups) => groups
                        .iter()
                        .map(|&g| policy.dst_group_name(g).to_string())
                        .collect(),
                },
                protocol: match rule.protocol {
                    Protocol::Any => v1::Protocol::Any as i32,
                    Protocol::Tcp => v1::Protocol::Tcp as i32,
                    Protocol::Udp => v1::Protocol::Udp as i32,
                },
                ports: match &rule.ports {
                    Ports::Any => Vec::new(),
                    Ports::Ranges(ranges) => ranges
                        .iter()
                        .map(|r| v1::PortRange {
                            first: u32::from(r.start),
                            last: u32::from(r.end),
                        })
                        .collect(),
                },
                action: action_to_proto(rule.action),
                log: rule.log,
                watch: rule.watch,
            })
            .collect(),
    }
}

fn action_to_proto(action: Action) -> i32 {
    match action {
        Action::Permit => v1::Action::Permit as i32,
        Action::Deny => v1::Action::Deny as i32,
        Action::Reject => v1::Action::Reject as i32,
    }
}

/// The model policy of a wire policy, checked with [`Policy::check`]; every error at once.
pub fn policy_from_proto(wire: &v1::Policy) -> Result<Policy, ConvertError> {
    let mut errors = Vec::new();
    let lists = [
        ("smartgroups", wire.smartgroups.len()),
        ("webgroups", wire.webgroups.len()),
        ("addressgroups", wire.addressgroups.len()),
        ("rules", wire.rules.len()),
    ];
    for (what, len) in lists {
        if len > MAX_ENTRIES {
            errors.push(format!("{what}: {len} entries, more than {MAX_ENTRIES}"));
        }
    }
    if !errors.is_empty() {
        return Err(ConvertError(errors));
    }
    let default_action = match v1::Action::try_from(wire.default_action) {
        Ok(v1::Action::Permit) => DefaultAction::Permit,
        Ok(v1::Action::Deny) => DefaultAction::Deny,
        _ => {
            errors.push(format!(
                "default_action: {} is not permit or deny",
                wire.default_action
            ));
            DefaultAction::Deny
        }
    };
    let mode = match v1::Mode::try_from(wire.mode) {
        Ok(v1::Mode::Enforce) => Mode::Enforce,
        Ok(v1::Mode::LogOnly) => Mode::LogOnly,
        _ => {
            errors.push(format!("mode: {} is not enforce or log-only", wire.mode));
            Mode::Enforce
        }
    };
    let quic = match v1::Quic::try_from(wire.quic) {
        Ok(v1::Quic::Unspecified | v1::Quic::Inspect) => QuicMode::Inspect,
        Ok(v1::Quic::Block) => QuicMode::Block,
        Err(_) => {
            errors.push(format!("quic: {} is not inspect or block", wire.quic));
            QuicMode::Inspect
        }
    };
    let sni_dns_check = match v1::SniDnsCheck::try_from(wire.sni_dns_check) {
        Ok(v1::SniDnsCheck::Unspecified | v1::SniDnsCheck::Log) => SniDnsCheck::Log,
        Ok(v1::SniDnsCheck::Enforce) => SniDnsCheck::Enforce,
        Ok(v1::SniDnsCheck::Off) => SniDnsCheck::Off,
        Err(_) => {
            errors.push(format!(
                "sni_dns_check: {} is not enforce, log or off",
                wire.sni_dns_check
            ));
            SniDnsCheck::Log
        }
    };
    let smartgroups = wire
        .smartgroups
        .iter()
        .map(|g| SmartGroup {
            name: g.name.clone(),
            cidrs: cidrs(&g.name, &g.cidrs, &mut errors),
            selectors: Vec::new(),
            description: None,
        })
        .collect();
    let webgroups = wire
        .webgroups
        .iter()
        .map(|g| WebGroup {
            name: g.name.clone(),
            patterns: patterns(&g.name, &g.domains, &mut errors),
            description: None,
        })
        .collect();
    let addressgroups = wire
        .addressgroups
        .iter()
        .map(|g| AddressGroup {
            name: g.name.clone(),
            cidrs: cidrs(&g.name, &g.cidrs, &mut errors),
            description: None,
        })
        .collect();
    let mut policy = Policy {
        default_action,
        mode,
        quic,
        sni_dns_check,
        smartgroups,
        webgroups,
        addressgroups,
        rules: Vec::new(),
    };
    let names = GroupNames::new(&policy);
    policy.rules = wire
        .rules
        .iter()
        .map(|rule| rule_from_proto(rule, &names, &mut errors))
        .collect();
    if let Err(problems) = policy.check() {
        errors.extend(problems.into_iter().map(|p| p.0));
    }
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(ConvertError(errors))
    }
}

fn cidrs(group: &str, texts: &[String], errors: &mut Vec<String>) -> Vec<IpNet> {
    if texts.len() > MAX_ENTRIES {
        errors.push(format!("group `{group}`: more than {MAX_ENTRIES} CIDRs"));
        return Vec::new();
    }
    texts
        .iter()
        .filter_map(|text| match text.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(_) => {
                errors.push(format!("group `{group}`: `{text}` is not a CIDR"));
                None
            }
        })
        .collect()
}

fn patterns(group: &str, texts: &[String], errors: &mut Vec<String>) -> Vec<NamePattern> {
    if texts.len() > MAX_ENTRIES {
        errors.push(format!(
            "webgroup `{group}`: more than {MAX_ENTRIES} domains"
        ));
        return Vec::new();
    }
    texts
        .iter()
        .filter_map(|text| match NamePattern::parse(text) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                errors.push(format!("webgroup `{group}`: `{text}`: {e}"));
                None
            }
        })
        .collect()
}

/// Group name to index, for the rules' references.
struct GroupNames {
    smart: HashMap<String, u32>,
    dst: HashMap<String, DstGroup>,
}

impl GroupNames {
    fn new(policy: &Policy) -> GroupNames {
        // Counts are bounded by MAX_ENTRIES, far below u32::MAX, so the casts cannot truncate.
        let smart: HashMap<String, u32> = policy
            .smartgroups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i as u32))
            .collect();
        let mut dst = HashMap::new();
        for (i, g) in policy.webgroups.iter().enumerate() {
            dst.insert(g.name.clone(), DstGroup::Web(i as u32));
        }
        for (i, g) in policy.addressgroups.iter().enumerate() {
            dst.insert(g.name.clone(), DstGroup::Address(i as u32));
        }
        for (name, &i) in &smart {
            dst.entry(name.clone()).or_insert(DstGroup::Smart(i));
        }
        GroupNames { smart, dst }
    }
}

fn rule_from_proto(rule: &v1::Rule, names: &GroupNames, errors: &mut Vec<String>) -> Rule {
    let name = &rule.name;
    let src = if rule.src.iter().any(|s| s == "any") {
        SrcSpec::Any
    } else {
        SrcSpec::Groups(
            rule.src
                .iter()
                .filter_map(|group| {
                    let found = names.smart.get(group).copied();
                    if found.is_none() {
                        errors.push(format!("rule `{name}`: src `{group}` is no smartgroup"));
                    }
                    found
                })
                .collect(),
        )
    };
    let dst = if rule.dst.iter().any(|d| d == "any") {
        DstSpec::Any
    } else {
        DstSpec::Groups(
            rule.dst
                .iter()
                .filter_map(|group| {
                    let found = names.dst.get(group).copied();
                    if found.is_none() {
                        errors.push(format!("rule `{name}`: dst `{group}` is no group"));
                    }
                    found
                })
                .collect(),
        )
    };
    let protocol = match v1::Protocol::try_from(rule.protocol) {
        Ok(v1::Protocol::Any) => Protocol::Any,
        Ok(v1::Protocol::Tcp) => Protocol::Tcp,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        _ => {
            errors.push(format!("rule `{name}`: unknown protocol {}", rule.protocol));
            Protocol::Any
        }
    };
    let action = match v1::Action::try_from(rule.action) {
        Ok(v1::Action::Permit) => Action::Permit,
        Ok(v1::Action::Deny) => Action::Deny,
        Ok(v1::Action::Reject) => Action::Reject,
        _ => {
            errors.push(format!("rule `{name}`: unknown action {}", rule.action));
            Action::Deny
        }
    };
    let ports = if rule.ports.is_empty() {
        Ports::Any
    } else {
        let mut ranges = Vec::with_capacity(rule.ports.len().min(1024));
        for range in &rule.ports {
            match (u16::try_from(range.first), u16::try_from(range.last)) {
                (Ok(start), Ok(end)) => ranges.push(PortRange { start, end }),
                _ => errors.push(format!(
                    "rule `{name}`: port range {}-{} is out of range",
                    range.first, range.last
                )),
            }
        }
        Ports::Ranges(ranges)
    };
    Rule {
        name: name.clone(),
        priority: rule.priority,
        src,
        dst,
        protocol,
        ports,
        action,
        log: rule.log,
        watch: rule.watch,
        description: None,
    }
}
