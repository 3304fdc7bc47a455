//! The three kinds of group: `[smartgroups.NAME]` (who, by source address or selector),
//! `[webgroups.NAME]` (where, by name pattern) and `[addressgroups.NAME]` (where, by address).
//!
//! Groups are read into the policy as they come and recorded as [`GroupDef`]s; duplicate names
//! are sorted out afterwards, in file order, by `resolve` (a later catalog must not decide which
//! of two definitions is "first").

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostics::{Location, Span};
use super::resolve::Dedup;
use super::toml_walk::ident_problem;
use super::Loader;
use crate::echo::Echo;
use crate::model::{AddressGroup, K8sSelector, Selector, SmartGroup, WebGroup};
use crate::name::NamePattern;

/// Which section a group was defined in. Group names are one namespace across the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupKind {
    Smart,
    Web,
    Address,
}

impl GroupKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            GroupKind::Smart => "smartgroup",
            GroupKind::Web => "webgroup",
            GroupKind::Address => "addressgroup",
        }
    }

    pub(super) fn with_article(self) -> &'static str {
        match self {
            GroupKind::Smart => "a smartgroup",
            GroupKind::Web => "a webgroup",
            GroupKind::Address => "an addressgroup",
        }
    }
}

/// What a group name refers to: the kind, the index into the policy's list of that kind, and
/// where it was defined (for messages about it).
#[derive(Debug, Clone)]
pub(super) struct GroupEntry {
    pub(super) kind: GroupKind,
    pub(super) index: u32,
    pub(super) at: Location,
}

/// A group definition, before duplicates are sorted out.
#[derive(Debug)]
pub(super) struct GroupDef {
    pub(super) name: String,
    pub(super) entry: GroupEntry,
    pub(super) src: usize,
    pub(super) span: Span,
}

impl Loader {
    /// Reads one `[smartgroups]`, `[webgroups]` or `[addressgroups]` table: each group into the
    /// policy, and its name into `group_defs` for `resolve`.
    pub(super) fn read_groups(
        &mut self,
        src: usize,
        value: &Spanned<DeValue<'_>>,
        kind: GroupKind,
    ) {
        let section = format!("[{}s]", kind.as_str());
        let Some(table) = self.expect_table(src, value, &section) else {
            return;
        };
        for (key, body) in table.iter() {
            let name = key.get_ref().as_ref();
            if let Some(problem) = ident_problem(name) {
                self.error(
                    src,
                    key.span(),
                    format!("invalid {} name: {problem}", kind.as_str()),
                );
            }
            let Some(body) = self.expect_table(
                src,
                body,
                format_args!("{} `{}`", kind.as_str(), Echo(name)),
            ) else {
                continue;
            };
            let at = self.location(src, &key.span());
            let index = match kind {
                GroupKind::Smart => self.read_smartgroup(src, name, body, &key.span()),
                GroupKind::Web => self.read_webgroup(src, name, body, &key.span()),
                GroupKind::Address => self.read_addressgroup(src, name, body, &key.span()),
            };
            self.group_defs.push(GroupDef {
                name: name.to_owned(),
                entry: GroupEntry { kind, index, at },
                src,
                span: key.span(),
            });
        }
    }

    fn read_smartgroup(&mut self, src: usize, name: &str, body: &DeTable<'_>, at: &Span) -> u32 {
        let mut group = SmartGroup {
            name: name.to_owned(),
            cidrs: Vec::new(),
            selectors: Vec::new(),
            description: None,
        };
        for (key, v) in body.iter() {
            match key.get_ref().as_ref() {
                "cidrs" => group.cidrs = self.cidr_list(src, v),
                "selectors" => {
                    if let Some(items) = self.expect_array(src, v, "selectors") {
                        for item in items.iter() {
                            if let Some(sel) = self.read_selector(src, item) {
                                group.selectors.push(sel);
                            }
                        }
                    }
                }
                "description" => {
                    group.description = self.expect_str(src, v, "description").map(str::to_owned);
                }
                other => self.unknown_key(
                    src,
                    key.span(),
                    other,
                    format_args!("smartgroup `{}`", Echo(name)),
                    "cidrs, selectors or description",
                ),
            }
        }
        if group.cidrs.is_empty() {
            if group.selectors.is_empty() {
                self.warn(
                    src,
                    at.clone(),
                    format!(
                        "smartgroup `{name}` has neither cidrs nor selectors: it matches nothing",
                        name = Echo(name)
                    ),
                );
            } else {
                self.warn(
                    src,
                    at.clone(),
                    format!(
                        "smartgroup `{name}` has no cidrs: its selectors are resolved by the controller; enforced from this file alone it matches nothing", name = Echo(name)),
                );
            }
        }
        self.policy.smartgroups.push(group);
        (self.policy.smartgroups.len() - 1) as u32
    }

    fn read_selector(&mut self, src: usize, item: &Spanned<DeValue<'_>>) -> Option<Selector> {
        let table = self.expect_table(src, item, "a selector")?;
        let mut sel = Selector::default();
        let mut any = false;
        for (key, v) in table.iter() {
            match key.get_ref().as_ref() {
                "tags" => {
                    sel.tags = self.string_map(src, v, "tags");
                    any = true;
                }
                "k8s" => {
                    any = true;
                    let Some(k8s) = self.expect_table(src, v, "`k8s`") else {
                        continue;
                    };
                    let mut out = K8sSelector::default();
                    for (k, kv) in k8s.iter() {
                        match k.get_ref().as_ref() {
                            "namespace" => {
                                out.namespace =
                                    self.expect_str(src, kv, "k8s.namespace").map(str::to_owned);
                            }
                            "labels" => out.labels = self.string_map(src, kv, "k8s.labels"),
                            other => self.unknown_key(
                                src,
                                k.span(),
                                other,
                                "a k8s selector",
                                "namespace or labels",
                            ),
                        }
                    }
                    sel.k8s = Some(out);
                }
                other => self.unknown_key(src, key.span(), other, "a selector", "tags or k8s"),
            }
        }
        if !any {
            self.error(
                src,
                item.span(),
                "a selector needs `tags` or `k8s`; an empty selector would select every workload",
            );
            return None;
        }
        Some(sel)
    }

    fn read_webgroup(&mut self, src: usize, name: &str, body: &DeTable<'_>, at: &Span) -> u32 {
        let mut group = WebGroup {
            name: name.to_owned(),
            patterns: Vec::new(),
            description: None,
        };
        let mut listed = 0;
        let mut seen = Dedup::default();
        for (key, v) in body.iter() {
            match key.get_ref().as_ref() {
                "domains" => {
                    let items = self.string_list(src, v, "domains");
                    listed += items.len();
                    for (text, span) in items {
                        match NamePattern::parse(&text) {
                            Ok(p) => {
                                if let Some(warning) = p.suffix_warning() {
                                    self.warn(src, span.clone(), warning);
                                }
                                if seen.first_time(&group.patterns, &p) {
                                    group.patterns.push(p);
                                }
                            }
                            Err(e) => self.error(
                                src,
                                span,
                                format!("invalid domain pattern `{text}`: {e}", text = Echo(&text)),
                            ),
                        }
                    }
                }
                "description" => {
                    group.description = self.expect_str(src, v, "description").map(str::to_owned);
                }
                other => self.unknown_key(
                    src,
                    key.span(),
                    other,
                    format_args!("webgroup `{}`", Echo(name)),
                    "domains or description",
                ),
            }
        }
        if listed == 0 {
            self.warn(
                src,
                at.clone(),
                format!(
                    "webgroup `{name}` has no domains: it matches nothing",
                    name = Echo(name)
                ),
            );
        }
        self.policy.webgroups.push(group);
        (self.policy.webgroups.len() - 1) as u32
    }

    fn read_addressgroup(&mut self, src: usize, name: &str, body: &DeTable<'_>, at: &Span) -> u32 {
        let mut group = AddressGroup {
            name: name.to_owned(),
            cidrs: Vec::new(),
            description: None,
        };
        let mut has_cidrs = false;
        for (key, v) in body.iter() {
            match key.get_ref().as_ref() {
                "cidrs" => {
                    group.cidrs = self.cidr_list(src, v);
                    has_cidrs = match v.get_ref() {
                        DeValue::Array(a) => !a.is_empty(),
                        _ => true,
                    };
                }
                "description" => {
                    group.description = self.expect_str(src, v, "description").map(str::to_owned);
                }
                other => self.unknown_key(
                    src,
                    key.span(),
                    other,
                    format_args!("addressgroup `{}`", Echo(name)),
                    "cidrs or description",
                ),
            }
        }
        if !has_cidrs {
            self.warn(
                src,
                at.clone(),
                format!(
                    "addressgroup `{name}` has no cidrs: it matches nothing",
                    name = Echo(name)
                ),
            );
        }
        self.policy.addressgroups.push(group);
        (self.policy.addressgroups.len() - 1) as u32
    }

    fn cidr_list(&mut self, src: usize, v: &Spanned<DeValue<'_>>) -> Vec<IpNet> {
        let mut out = Vec::new();
        let mut seen = Dedup::default();
        for (text, span) in self.string_list(src, v, "cidrs") {
            match parse_cidr(&text) {
                Ok(net) => {
                    if seen.first_time(&out, &net) {
                        out.push(net);
                    }
                }
                Err(message) => self.error(src, span, message),
            }
        }
        out
    }
}

/// Parses a CIDR (or a bare address, taken as a host route); host bits must be zero.
///
/// Stricter than `IpNet`'s own parser, which reads `010.0.0.0/8` as `10.0.0.0/8`: tools differ
/// on whether a leading zero means octal (`010` = 8), so an address or prefix length with one is
/// refused rather than guessed at. IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are refused
/// too: packets carry IPv4 addresses as IPv4, so such a network would silently never match.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let invalid = || {
        format!(
            "invalid CIDR `{}`: expected an address and a prefix length, like 10.0.0.0/8 or fd00::/64",
            Echo(text)
        )
    };
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    if has_leading_zero_octet(addr_text) {
        return Err(format!(
            "invalid CIDR `{}`: an IPv4 address part with a leading zero is ambiguous (octal in some tools); write it without the zero",
            Echo(text)
        ));
    }
    let addr: IpAddr = addr_text.parse().map_err(|_| invalid())?;
    let net = match len_text {
        None => IpNet::from(addr),
        Some(l) => {
            let valid_digits =
                !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit());
            if !valid_digits || (l.len() > 1 && l.starts_with('0')) {
                return Err(invalid());
            }
            let len: u8 = l.parse().map_err(|_| invalid())?;
            IpNet::new(addr, len).map_err(|_| {
                format!(
                    "invalid CIDR `{}`: the prefix length is at most {} for this address family",
                    Echo(text),
                    if addr.is_ipv4() { 32 } else { 128 }
                )
            })?
        }
    };
    if let Some(v4) = ipv4_mapped_equivalent(&net) {
        return Err(format!(
            "CIDR `{}` is an IPv4-mapped IPv6 network: IPv4 packets are matched by IPv4 CIDRs, so it would never match; write `{v4}`",
            Echo(text)
        ));
    }
    if net.trunc() != net {
        return Err(format!(
            "CIDR `{}` has host bits set: did you mean `{}`?",
            Echo(text),
            net.trunc()
        ));
    }
    Ok(net)
}

/// True when a dotted IPv4 part of `addr` (also the tail of an IPv6 address) has a number
/// written with a leading zero, as in `010.0.0.1` or `::ffff:10.01.0.1`.
fn has_leading_zero_octet(addr: &str) -> bool {
    let dotted = addr.rsplit(':').next().unwrap_or(addr);
    dotted.contains('.')
        && dotted
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'))
}

/// The IPv4 network an IPv4-mapped IPv6 network (within `::ffff:0:0/96`) stands for.
pub(crate) fn ipv4_mapped_equivalent(net: &IpNet) -> Option<Ipv4Net> {
    let IpNet::V6(v6) = net else {
        return None;
    };
    if v6.prefix_len() < 96 {
        return None;
    }
    let v4 = v6.network().to_ipv4_mapped()?;
    Ipv4Net::new(v4, v6.prefix_len() - 96)
        .ok()
        .map(|n| n.trunc())
}
