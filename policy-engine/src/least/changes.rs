//! Rule and group changes between two policies, by name: what `bulkheadctl diff V1 V2` lists
//! beside the verdict changes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{DstSpec, Policy, Ports, Rule, SrcSpec};

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `rule`, `smartgroup`, `webgroup`, `addressgroup` or `policy`.
    pub kind: &'static str,
    /// The rule or group name (`policy` for the `[policy]` settings).
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// What changed, for people: `priority 100 -> 50; action permit -> deny`, or the added and
    /// removed members of a group.
    pub detail: String,
}

fn src_text(p: &Policy, r: &Rule) -> String {
    match &r.src {
        SrcSpec::Any => "any".to_owned(),
        SrcSpec::Groups(g) => g
            .iter()
            .map(|&i| {
                p.smartgroups
                    .get(i as usize)
                    .map_or("?", |g| g.name.as_str())
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn dst_text(p: &Policy, r: &Rule) -> String {
    match &r.dst {
        DstSpec::Any => "any".to_owned(),
        DstSpec::Groups(g) => g
            .iter()
            .map(|&d| p.dst_group_name(d))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn ports_text(r: &Rule) -> String {
    match &r.ports {
        Ports::Any => "any".to_owned(),
        Ports::Ranges(rs) => rs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// A rule's fields as (field, text), for comparison.
fn rule_fields(p: &Policy, r: &Rule) -> Vec<(&'static str, String)> {
    vec![
        ("priority", r.priority.to_string()),
        ("src", src_text(p, r)),
        ("dst", dst_text(p, r)),
        ("protocol", r.protocol.as_str().to_owned()),
        ("ports", ports_text(r)),
        ("action", r.action.as_str().to_owned()),
        ("watch", r.watch.to_string()),
        ("log", r.log.to_string()),
    ]
}

/// Added and removed members, `+a +b -c`, at most `limit` of each shown.
fn members(old: &[String], new: &[String]) -> String {
    const LIMIT: usize = 20;
    let added: Vec<&String> = new.iter().filter(|m| !old.contains(m)).collect();
    let removed: Vec<&String> = old.iter().filter(|m| !new.contains(m)).collect();
    let mut parts: Vec<String> = Vec::new();
    for (sign, list) in [("+", &added), ("-", &removed)] {
        parts.extend(list.iter().take(LIMIT).map(|m| format!("{sign}{m}")));
        if list.len() > LIMIT {
            parts.push(format!("({} more {sign})", list.len() - LIMIT));
        }
    }
    parts.join(" ")
}

fn diff_sets(
    out: &mut Vec<Change>,
    kind: &'static str,
    old: BTreeMap<String, Vec<String>>,
    new: BTreeMap<String, Vec<String>>,
) {
    for (name, members_old) in &old {
        match new.get(name) {
            None => out.push(Change {
                kind,
                name: name.clone(),
                change: "removed",
                detail: String::new(),
            }),
            Some(members_new) => {
                let mut a = members_old.clone();
                let mut b = members_new.clone();
                a.sort();
                b.sort();
                if a != b {
                    out.push(Change {
                        kind,
                        name: name.clone(),
                        change: "changed",
                        detail: members(&a, &b),
                    });
                }
            }
        }
    }
    for (name, members_new) in &new {
        if !old.contains_key(name) {
            out.push(Change {
                kind,
                name: name.clone(),
                change: "added",
                detail: members(&[], members_new),
            });
        }
    }
}

/// Every rule and group added, removed or changed from `old` to `new`, and changes of the
/// `[policy]` settings: policy first, then rules in the new priority order (removed ones
/// after), then groups by kind and name.
pub fn policy_changes(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    let settings = |p: &Policy| {
        vec![
            (
                "default_action",
                p.default_action.action().as_str().to_owned(),
            ),
            ("mode", p.mode.as_str().to_owned()),
            ("quic", p.quic.as_str().to_owned()),
        ]
    };
    let changed: Vec<String> = settings(old)
        .into_iter()
        .zip(settings(new))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| format!("{} {} -> {}", a.0, a.1, b.1))
        .collect();
    if !changed.is_empty() {
        out.push(Change {
            kind: "policy",
            name: "policy".to_owned(),
            change: "changed",
            detail: changed.join("; "),
        });
    }
    let old_rules: BTreeMap<&str, &Rule> = old.rules.iter().map(|r| (r.name.as_str(), r)).collect();
    for r in &new.rules {
        match old_rules.get(r.name.as_str()) {
            None => out.push(Change {
                kind: "rule",
                name: r.name.clone(),
                change: "added",
                detail: rule_fields(new, r)
                    .into_iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            Some(o) => {
                let diffs: Vec<String> = rule_fields(old, o)
                    .into_iter()
                    .zip(rule_fields(new, r))
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, b)| format!("{} {} -> {}", a.0, a.1, b.1))
                    .collect();
                if !diffs.is_empty() {
                    out.push(Change {
                        kind: "rule",
                        name: r.name.clone(),
                        change: "changed",
                        detail: diffs.join("; "),
                    });
                }
            }
        }
    }
    let new_names: std::collections::HashSet<&str> =
        new.rules.iter().map(|r| r.name.as_str()).collect();
    for r in &old.rules {
        if !new_names.contains(r.name.as_str()) {
            out.push(Change {
                kind: "rule",
                name: r.name.clone(),
                change: "removed",
                detail: String::new(),
            });
        }
    }
    let smart = |p: &Policy| {
        p.smartgroups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.cidrs.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    };
    let web = |p: &Policy| {
        p.webgroups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.patterns.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    };
    let addr = |p: &Policy| {
        p.addressgroups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.cidrs.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    };
    diff_sets(&mut out, "smartgroup", smart(old), smart(new));
    diff_sets(&mut out, "webgroup", web(old), web(new));
    diff_sets(&mut out, "addressgroup", addr(old), addr(new));
    out
}
