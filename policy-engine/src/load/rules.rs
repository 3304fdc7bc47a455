//! `[[rules]]` entries: each key read and checked on its own, the required ones counted, and the
//! rule kept as a [`PendingRule`] with the spans that `resolve` needs to report duplicate names,
//! duplicate priorities and unknown group names where they were written.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostics::{Location, Span};
use super::toml_walk::{ident_problem, integer, type_name};
use super::Loader;
use crate::echo::Echo;
use crate::model::{Action, DstSpec, PortRange, Ports, Protocol, Rule, SrcSpec};

/// A rule as read, before references are resolved and priorities sorted.
#[derive(Debug)]
pub(super) struct PendingRule {
    pub(super) rule: Rule,
    pub(super) ok: bool,
    pub(super) src: usize,
    pub(super) at: Location,
    pub(super) name_span: Span,
    pub(super) priority_span: Span,
    pub(super) has_priority: bool,
    pub(super) src_items: Vec<(String, Span)>,
    pub(super) dst_items: Vec<(String, Span)>,
}

/// The keys every rule must have, in the order of [`RuleDraft::seen`].
const REQUIRED: [&str; 5] = ["name", "priority", "src", "dst", "action"];

/// One `[[rules]]` entry while its keys are read. A key that is wrong clears `ok` and the walk
/// goes on, so that the other keys are still checked.
#[derive(Debug)]
struct RuleDraft {
    rule: Rule,
    ok: bool,
    /// The entry as a whole (from its `[[rules]]` header): where rule-level messages point.
    span: Span,
    /// Which of [`REQUIRED`] were given.
    seen: [bool; 5],
    name_span: Span,
    priority_span: Span,
    has_priority: bool,
    src_span: Span,
    dst_span: Span,
    src_items: Vec<(String, Span)>,
    dst_items: Vec<(String, Span)>,
}

impl RuleDraft {
    fn new(span: Span) -> RuleDraft {
        RuleDraft {
            rule: Rule {
                name: String::new(),
                priority: 0,
                src: SrcSpec::Any,
                dst: DstSpec::Any,
                protocol: Protocol::Any,
                ports: Ports::Any,
                action: Action::Deny,
                log: false,
                watch: false,
                description: None,
            },
            ok: true,
            seen: [false; 5],
            name_span: span.clone(),
            priority_span: span.clone(),
            has_priority: false,
            src_span: span.clone(),
            dst_span: span.clone(),
            src_items: Vec::new(),
            dst_items: Vec::new(),
            span,
        }
    }

    fn into_pending(self, src: usize, at: Location) -> PendingRule {
        PendingRule {
            rule: self.rule,
            ok: self.ok,
            src,
            at,
            name_span: self.name_span,
            priority_span: self.priority_span,
            has_priority: self.has_priority,
            src_items: self.src_items,
            dst_items: self.dst_items,
        }
    }
}

impl Loader {
    pub(super) fn read_rules(&mut self, src: usize, value: &Spanned<DeValue<'_>>) {
        let Some(items) = self.expect_array(src, value, "rules") else {
            return;
        };
        for item in items.iter() {
            let Some(table) = self.expect_table(src, item, "each [[rules]] entry") else {
                continue;
            };
            self.read_rule(src, item.span(), table);
        }
    }

    fn read_rule(&mut self, src: usize, span: Span, table: &DeTable<'_>) {
        let mut draft = RuleDraft::new(self.rule_header(src, span));
        for (key, v) in table.iter() {
            self.read_rule_key(src, &mut draft, key.get_ref().as_ref(), key.span(), v);
        }
        self.check_rule_complete(src, &mut draft);
        let at = self.location(src, &draft.name_span);
        self.rules.push(draft.into_pending(src, at));
    }

    /// The span of a rule entry widened back to its `[[rules]]` header, so that rule-level
    /// messages point at the header rather than at the first key.
    fn rule_header(&self, src: usize, span: Span) -> Span {
        // Only the line of the first key and the two above are searched: a search back through
        // the whole file for each rule would make a file of inline-table rules quadratic.
        let source = &self.sources[src];
        let from = source.line_start_above(span.start, 2);
        let window = source.text.get(from..span.start).unwrap_or("");
        match window.rfind("[[") {
            Some(h) => from + h..span.end,
            None => span,
        }
    }

    fn read_rule_key(
        &mut self,
        src: usize,
        d: &mut RuleDraft,
        key: &str,
        key_span: Span,
        v: &Spanned<DeValue<'_>>,
    ) {
        match key {
            "name" => self.read_rule_name(src, d, v),
            "priority" => self.read_rule_priority(src, d, v),
            "src" => {
                d.seen[2] = true;
                d.src_span = v.span();
                d.src_items = self.string_list(src, v, "src");
            }
            "dst" => {
                d.seen[3] = true;
                d.dst_span = v.span();
                d.dst_items = self.string_list(src, v, "dst");
            }
            "protocol" => self.read_rule_protocol(src, d, v),
            "ports" => match self.read_ports(src, v) {
                Some(p) => d.rule.ports = p,
                None => d.ok = false,
            },
            "action" => self.read_rule_action(src, d, v),
            "log" => d.rule.log = self.expect_bool(src, v, "log").unwrap_or(false),
            "watch" => d.rule.watch = self.expect_bool(src, v, "watch").unwrap_or(false),
            "description" => {
                d.rule.description = self.expect_str(src, v, "description").map(str::to_owned);
            }
            other => self.unknown_key(
                src,
                key_span,
                other,
                "a rule",
                "name, priority, src, dst, protocol, ports, action, log, watch or description",
            ),
        }
    }

    fn read_rule_name(&mut self, src: usize, d: &mut RuleDraft, v: &Spanned<DeValue<'_>>) {
        d.seen[0] = true;
        d.name_span = v.span();
        match self.expect_str(src, v, "name") {
            Some(n) => {
                if let Some(problem) = ident_problem(n) {
                    self.error(src, v.span(), format!("invalid rule name: {problem}"));
                    d.ok = false;
                }
                d.rule.name = n.to_owned();
            }
            None => d.ok = false,
        }
    }

    fn read_rule_priority(&mut self, src: usize, d: &mut RuleDraft, v: &Spanned<DeValue<'_>>) {
        d.seen[1] = true;
        d.has_priority = true;
        d.priority_span = v.span();
        match integer(v.get_ref()) {
            Some(p) if (0..=i128::from(u32::MAX)).contains(&p) => d.rule.priority = p as u32,
            Some(p) => {
                // An invalid priority takes part in no duplicate-priority check.
                d.has_priority = false;
                self.error(
                    src,
                    v.span(),
                    format!("priority {p} is out of range: use an integer from 0 to 4294967295"),
                );
                d.ok = false;
            }
            None => {
                d.has_priority = false;
                self.error(
                    src,
                    v.span(),
                    format!(
                        "`priority` must be an integer, not {}",
                        type_name(v.get_ref())
                    ),
                );
                d.ok = false;
            }
        }
    }

    fn read_rule_protocol(&mut self, src: usize, d: &mut RuleDraft, v: &Spanned<DeValue<'_>>) {
        if let Some(p) = self.expect_str(src, v, "protocol") {
            match p {
                "tcp" => d.rule.protocol = Protocol::Tcp,
                "udp" => d.rule.protocol = Protocol::Udp,
                "any" => d.rule.protocol = Protocol::Any,
                other => {
                    self.error(
                        src,
                        v.span(),
                        format!(
                            "invalid protocol `{other}`: expected \"tcp\", \"udp\" or \"any\"",
                            other = Echo(other)
                        ),
                    );
                    d.ok = false;
                }
            }
        } else {
            d.ok = false;
        }
    }

    fn read_rule_action(&mut self, src: usize, d: &mut RuleDraft, v: &Spanned<DeValue<'_>>) {
        d.seen[4] = true;
        match self.expect_str(src, v, "action") {
            Some("permit") => d.rule.action = Action::Permit,
            Some("deny") => d.rule.action = Action::Deny,
            Some("reject") => d.rule.action = Action::Reject,
            Some(other) => {
                self.error(
                    src,
                    v.span(),
                    format!(
                        "invalid action `{other}`: expected \"permit\", \"deny\" or \"reject\"",
                        other = Echo(other)
                    ),
                );
                d.ok = false;
            }
            None => d.ok = false,
        }
    }

    /// Reports the required keys a rule lacks, and a `src` or `dst` given as an empty list.
    fn check_rule_complete(&mut self, src: usize, d: &mut RuleDraft) {
        for (i, key) in REQUIRED.iter().enumerate() {
            if !d.seen[i] {
                let who = if d.rule.name.is_empty() {
                    "this rule".to_owned()
                } else {
                    format!("rule `{}`", Echo(&d.rule.name))
                };
                self.error(src, d.span.clone(), format!("{who} has no `{key}`; every rule needs name, priority, src, dst and action", key = Echo(key)));
                d.ok = false;
            }
        }
        if d.seen[2] && d.src_items.is_empty() {
            self.error(
                src,
                d.src_span.clone(),
                "`src` is empty; use [\"any\"] to match every source",
            );
            d.ok = false;
        }
        if d.seen[3] && d.dst_items.is_empty() {
            self.error(
                src,
                d.dst_span.clone(),
                "`dst` is empty; use [\"any\"] to match every destination",
            );
            d.ok = false;
        }
    }

    fn read_ports(&mut self, src: usize, v: &Spanned<DeValue<'_>>) -> Option<Ports> {
        let items: Vec<&Spanned<DeValue<'_>>> = match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            DeValue::String(_) | DeValue::Integer(_) => vec![v],
            other => {
                self.error(
                    src,
                    v.span(),
                    format!("`ports` must be an array of ports and ranges, like [\"443\", \"8443-8445\"], not {}", type_name(other)),
                );
                return None;
            }
        };
        if items.is_empty() {
            self.error(
                src,
                v.span(),
                "`ports` is empty; leave it out to match any port",
            );
            return None;
        }
        let mut ranges = Vec::new();
        let mut ok = true;
        for item in items {
            match parse_port_item(item.get_ref()) {
                Ok(r) => ranges.push(r),
                Err(message) => {
                    self.error(src, item.span(), message);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        ranges.sort_unstable();
        // Merge overlapping and adjacent ranges.
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                    last.end = last.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        Some(Ports::Ranges(merged))
    }
}

fn parse_port_item(v: &DeValue<'_>) -> Result<PortRange, String> {
    let text = match v {
        DeValue::Integer(_) => {
            let n = integer(v).unwrap_or(-1);
            return port_number(&n.to_string()).map(|p| PortRange { start: p, end: p });
        }
        DeValue::String(s) => s.trim(),
        other => {
            return Err(format!(
                "a port must be a number or a string like \"443\" or \"8443-8445\", not {}",
                type_name(other)
            ))
        }
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (start, end) = (port_number(a.trim())?, port_number(b.trim())?);
            if start > end {
                return Err(format!(
                    "port range `{text}` is reversed: write `{end}-{start}`",
                    text = Echo(text)
                ));
            }
            Ok(PortRange { start, end })
        }
        None => port_number(text).map(|p| PortRange { start: p, end: p }),
    }
}

fn port_number(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid port `{text}`: expected a number from 1 to 65535 or a range like \"8443-8445\"", text = Echo(text)));
    }
    match text.parse::<u32>() {
        Ok(0) => Err("port 0 is not a valid destination port: use 1 to 65535".to_owned()),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!(
            "port {text} is out of range: use 1 to 65535",
            text = Echo(text)
        )),
    }
}
