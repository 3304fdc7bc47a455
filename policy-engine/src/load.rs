//! Loading and validating policy files.
//!
//! The TOML is parsed with spans, then checked in one pass that gathers every problem before
//! deciding: syntax errors, unknown keys, wrong types, invalid values, duplicate or undefined
//! names, duplicate priorities. Each problem becomes a [`Diagnostic`] with the file, line and
//! column it is about. When there is no error, the result is a [`Policy`] (which keeps no spans)
//! and the warnings: rules that can never match because an earlier rule shadows them, groups
//! that match nothing.
//!
//! A policy may include catalog files (`include = ["webgroups/ai-providers.toml"]` in
//! `[policy]`), resolved relative to the including file. A catalog holds `version`,
//! `description`, `[webgroups.*]` and `[addressgroups.*]`; it cannot include other files.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use crate::model::{
    Action, AddressGroup, DefaultAction, DstGroup, DstSpec, K8sSelector, Mode, Policy, PortRange,
    Ports, Protocol, Rule, Selector, SmartGroup, SrcSpec, WebGroup,
};
use crate::name::NamePattern;

/// Largest policy or catalog file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Most catalog files one policy may include.
pub const MAX_INCLUDES: usize = 64;
/// Longest group or rule name.
pub const MAX_IDENT_LEN: usize = 128;

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The policy is not applied.
    Error,
    /// The policy is valid, but probably not what its author meant.
    Warning,
}

/// A problem found in a policy file, with its position (line and column start at 1; the column
/// counts characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as given (the policy path, or the include path joined to its directory).
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {kind}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A policy that did not load: every error (and the warnings found on the way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Every error, in file order.
    pub errors: Vec<Diagnostic>,
    /// Warnings found while looking for errors.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// Where a rule or group was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A valid policy and its warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPolicy {
    /// The policy.
    pub policy: Policy,
    /// Warnings (the policy is valid).
    pub warnings: Vec<Diagnostic>,
    /// Where each rule of `policy.rules` was defined (same order).
    pub rule_locations: Vec<Location>,
    /// The files read: the policy first, then its includes.
    pub files: Vec<PathBuf>,
}

/// Loads and validates a policy file; includes are resolved relative to it.
pub fn load_policy_file(path: &Path) -> Result<LoadedPolicy, LoadError> {
    match read_bounded(path) {
        Ok(text) => load_policy_str(&text, path),
        Err(message) => Err(LoadError {
            errors: vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message,
            }],
            warnings: Vec::new(),
        }),
    }
}

/// Loads and validates policy text; `origin` names it in diagnostics and anchors includes.
pub fn load_policy_str(text: &str, origin: &Path) -> Result<LoadedPolicy, LoadError> {
    let mut loader = Loader::default();
    loader.load_main(text, origin);
    loader.finish()
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {MAX_FILE_BYTES} bytes; refusing to load it"
        ));
    }
    Ok(text)
}

/// One loaded file: its path and where its lines start.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    line_starts: Vec<usize>,
    text: String,
}

impl Source {
    fn new(path: PathBuf, text: &str) -> Source {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            path,
            line_starts,
            text: text.to_owned(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }
}

type Span = std::ops::Range<usize>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Smart,
    Web,
    Address,
}

impl GroupKind {
    fn as_str(self) -> &'static str {
        match self {
            GroupKind::Smart => "smartgroup",
            GroupKind::Web => "webgroup",
            GroupKind::Address => "addressgroup",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            GroupKind::Smart => "a smartgroup",
            GroupKind::Web => "a webgroup",
            GroupKind::Address => "an addressgroup",
        }
    }
}

#[derive(Debug, Clone)]
struct GroupEntry {
    kind: GroupKind,
    index: u32,
    at: Location,
}

/// A rule as read, before references are resolved and priorities sorted.
#[derive(Debug)]
struct PendingRule {
    rule: Rule,
    ok: bool,
    src: usize,
    at: Location,
    name_span: Span,
    priority_span: Span,
    has_priority: bool,
    src_items: Vec<(String, Span)>,
    dst_items: Vec<(String, Span)>,
}

#[derive(Debug, Default)]
struct Loader {
    sources: Vec<Source>,
    diags: Vec<(usize, Diagnostic)>,
    policy: Policy,
    groups: HashMap<String, GroupEntry>,
    group_defs: Vec<GroupDef>,
    rules: Vec<PendingRule>,
    rule_locations: Vec<Location>,
}

/// A group definition, before duplicates are sorted out.
#[derive(Debug)]
struct GroupDef {
    name: String,
    entry: GroupEntry,
    src: usize,
    span: Span,
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn ident_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name cannot be empty".to_owned());
    }
    if name.len() > MAX_IDENT_LEN {
        return Some(format!(
            "the name is {} characters long; at most {MAX_IDENT_LEN} are allowed",
            name.len()
        ));
    }
    if name == "any" || name == "default" {
        return Some(format!("`{name}` is reserved and cannot be used as a name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "invalid character {c:?} in the name `{name}`: names may contain ASCII letters, digits, `-`, `_` and `.`"
        ));
    }
    None
}

impl Loader {
    fn error(&mut self, src: usize, span: Span, message: impl Into<String>) {
        self.diag(Severity::Error, src, span.start, message.into());
    }

    fn warn(&mut self, src: usize, span: Span, message: impl Into<String>) {
        self.diag(Severity::Warning, src, span.start, message.into());
    }

    fn diag(&mut self, severity: Severity, src: usize, offset: usize, message: String) {
        let source = &self.sources[src];
        let (line, column) = source.position(offset);
        self.diags.push((
            src,
            Diagnostic {
                severity,
                file: source.path.clone(),
                line,
                column,
                message,
            },
        ));
    }

    fn location(&self, src: usize, span: &Span) -> Location {
        let source = &self.sources[src];
        let (line, column) = source.position(span.start);
        Location {
            file: source.path.clone(),
            line,
            column,
        }
    }

    fn add_source(&mut self, path: PathBuf, text: &str) -> usize {
        self.sources.push(Source::new(path, text));
        self.sources.len() - 1
    }

    fn parse<'t>(&mut self, src: usize, text: &'t str) -> Option<Spanned<DeTable<'t>>> {
        let (table, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Some(table);
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let mut message = e.message().trim_end().to_owned();
            if message == "duplicate key" {
                message.push_str(" (it is already defined above)");
            }
            self.error(src, span, format!("invalid TOML: {message}"));
        }
        None
    }

    fn load_main(&mut self, text: &str, origin: &Path) {
        let src = self.add_source(origin.to_path_buf(), text);
        let Some(doc) = self.parse(src, text) else {
            return;
        };
        let mut includes: Vec<(String, Span)> = Vec::new();
        for (key, value) in doc.get_ref().iter() {
            match key.get_ref().as_ref() {
                "policy" => self.read_policy_section(src, value, &mut includes),
                "smartgroups" => self.read_groups(src, value, GroupKind::Smart),
                "webgroups" => self.read_groups(src, value, GroupKind::Web),
                "addressgroups" => self.read_groups(src, value, GroupKind::Address),
                "rules" => self.read_rules(src, value),
                other => self.error(
                    src,
                    key.span(),
                    format!(
                        "unknown key `{other}`; a policy has the sections [policy], [smartgroups.NAME], [webgroups.NAME], [addressgroups.NAME] and [[rules]]"
                    ),
                ),
            }
        }
        let base = origin.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut seen: Vec<PathBuf> = Vec::new();
        for (i, (rel, span)) in includes.into_iter().enumerate() {
            if i == MAX_INCLUDES {
                self.error(
                    src,
                    span,
                    format!("too many includes: at most {MAX_INCLUDES} files may be included"),
                );
                break;
            }
            let path = base.join(&rel);
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.contains(&canonical) {
                self.error(src, span, format!("`{rel}` is included more than once"));
                continue;
            }
            seen.push(canonical);
            match read_bounded(&path) {
                Ok(text) => self.load_catalog(&text, path),
                Err(message) => self.error(
                    src,
                    span,
                    format!("cannot include `{}`: {message}", path.display()),
                ),
            }
        }
        self.index_groups();
        self.resolve_rules();
    }

    /// Indexes groups by name; a name defined twice is reported at its later definition.
    fn index_groups(&mut self) {
        let mut defs = std::mem::take(&mut self.group_defs);
        defs.sort_by_key(|d| (d.src, d.span.start));
        for def in defs {
            if let Some(prev) = self.groups.get(&def.name) {
                let message = format!(
                    "`{}` is already defined as {} at {}; group names must be unique across smartgroups, webgroups and addressgroups",
                    def.name,
                    prev.kind.with_article(),
                    prev.at
                );
                self.error(def.src, def.span, message);
            } else {
                self.groups.insert(def.name, def.entry);
            }
        }
    }

    fn read_policy_section(
        &mut self,
        src: usize,
        value: &Spanned<DeValue<'_>>,
        includes: &mut Vec<(String, Span)>,
    ) {
        let Some(table) = self.expect_table(src, value, "[policy]") else {
            return;
        };
        for (key, v) in table.iter() {
            match key.get_ref().as_ref() {
                "default_action" => {
                    if let Some(s) = self.expect_str(src, v, "default_action") {
                        match s {
                            "deny" => self.policy.default_action = DefaultAction::Deny,
                            "permit" => self.policy.default_action = DefaultAction::Permit,
                            other => self.error(
                                src,
                                v.span(),
                                format!("invalid default_action `{other}`: expected \"deny\" or \"permit\""),
                            ),
                        }
                    }
                }
                "mode" => {
                    if let Some(s) = self.expect_str(src, v, "mode") {
                        match s {
                            "enforce" => self.policy.mode = Mode::Enforce,
                            "log-only" => self.policy.mode = Mode::LogOnly,
                            other => self.error(
                                src,
                                v.span(),
                                format!("invalid mode `{other}`: expected \"enforce\" or \"log-only\""),
                            ),
                        }
                    }
                }
                "include" => {
                    for (s, span) in self.string_list(src, v, "include") {
                        if s.is_empty() {
                            self.error(src, span, "an include path cannot be empty");
                        } else {
                            includes.push((s, span));
                        }
                    }
                }
                "description" => {
                    self.expect_str(src, v, "description");
                }
                other => self.error(
                    src,
                    key.span(),
                    format!("unknown key `{other}` in [policy]; expected default_action, mode, include or description"),
                ),
            }
        }
    }

    fn load_catalog(&mut self, text: &str, path: PathBuf) {
        let src = self.add_source(path, text);
        let Some(doc) = self.parse(src, text) else {
            return;
        };
        for (key, value) in doc.get_ref().iter() {
            match key.get_ref().as_ref() {
                "version" => match value.get_ref() {
                    DeValue::Integer(_) | DeValue::String(_) => {}
                    other => self.error(
                        src,
                        value.span(),
                        format!("`version` must be an integer or a string, not {}", type_name(other)),
                    ),
                },
                "description" => {
                    self.expect_str(src, value, "description");
                }
                "webgroups" => self.read_groups(src, value, GroupKind::Web),
                "addressgroups" => self.read_groups(src, value, GroupKind::Address),
                other => self.error(
                    src,
                    key.span(),
                    format!(
                        "unknown key `{other}` in an included catalog; a catalog has version, description, [webgroups.NAME] and [addressgroups.NAME]"
                    ),
                ),
            }
        }
    }

    fn expect_table<'v, 't>(
        &mut self,
        src: usize,
        value: &'v Spanned<DeValue<'t>>,
        what: &str,
    ) -> Option<&'v DeTable<'t>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    src,
                    value.span(),
                    format!("{what} must be a table, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn expect_str<'v>(
        &mut self,
        src: usize,
        value: &'v Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.error(
                    src,
                    value.span(),
                    format!("`{key}` must be a string, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn expect_bool(&mut self, src: usize, value: &Spanned<DeValue<'_>>, key: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    src,
                    value.span(),
                    format!("`{key}` must be true or false, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn expect_array<'v, 't>(
        &mut self,
        src: usize,
        value: &'v Spanned<DeValue<'t>>,
        key: &str,
    ) -> Option<&'v DeArray<'t>> {
        match value.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.error(
                    src,
                    value.span(),
                    format!("`{key}` must be an array, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array of strings (a lone string counts as a one-element array).
    fn string_list(
        &mut self,
        src: usize,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Vec<(String, Span)> {
        match value.get_ref() {
            DeValue::String(s) => vec![(s.to_string(), value.span())],
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span())),
                        other => self.error(
                            src,
                            item.span(),
                            format!("`{key}` must hold strings, not {}", type_name(other)),
                        ),
                    }
                }
                out
            }
            other => {
                self.error(
                    src,
                    value.span(),
                    format!(
                        "`{key}` must be an array of strings, not {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn string_map(
        &mut self,
        src: usize,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(table) = self.expect_table(src, value, &format!("`{key}`")) else {
            return out;
        };
        for (k, v) in table.iter() {
            if let Some(s) = self.expect_str(src, v, &format!("{key}.{}", k.get_ref())) {
                out.insert(k.get_ref().to_string(), s.to_owned());
            }
        }
        out
    }

    fn read_groups(&mut self, src: usize, value: &Spanned<DeValue<'_>>, kind: GroupKind) {
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
            let Some(body) = self.expect_table(src, body, &format!("{} `{name}`", kind.as_str()))
            else {
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

    fn unknown_key(&mut self, src: usize, span: Span, key: &str, what: &str, expected: &str) {
        self.error(
            src,
            span,
            format!("unknown key `{key}` in {what}; expected {expected}"),
        );
    }

    fn read_smartgroup(&mut self, src: usize, name: &str, body: &DeTable<'_>, at: &Span) -> u32 {
        let mut group = SmartGroup {
            name: name.to_owned(),
            cidrs: Vec::new(),
            selectors: Vec::new(),
            description: None,
        };
        let what = format!("smartgroup `{name}`");
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
                    &what,
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
                        "smartgroup `{name}` has neither cidrs nor selectors: it matches nothing"
                    ),
                );
            } else {
                self.warn(
                    src,
                    at.clone(),
                    format!(
                        "smartgroup `{name}` has no cidrs: its selectors are resolved by the controller; enforced from this file alone it matches nothing"
                    ),
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
        let what = format!("webgroup `{name}`");
        let mut listed = 0;
        for (key, v) in body.iter() {
            match key.get_ref().as_ref() {
                "domains" => {
                    let items = self.string_list(src, v, "domains");
                    listed += items.len();
                    for (text, span) in items {
                        match NamePattern::parse(&text) {
                            Ok(p) => {
                                if !group.patterns.contains(&p) {
                                    group.patterns.push(p);
                                }
                            }
                            Err(e) => self.error(
                                src,
                                span,
                                format!("invalid domain pattern `{text}`: {e}"),
                            ),
                        }
                    }
                }
                "description" => {
                    group.description = self.expect_str(src, v, "description").map(str::to_owned);
                }
                other => self.unknown_key(src, key.span(), other, &what, "domains or description"),
            }
        }
        if listed == 0 {
            self.warn(
                src,
                at.clone(),
                format!("webgroup `{name}` has no domains: it matches nothing"),
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
        let what = format!("addressgroup `{name}`");
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
                other => self.unknown_key(src, key.span(), other, &what, "cidrs or description"),
            }
        }
        if !has_cidrs {
            self.warn(
                src,
                at.clone(),
                format!("addressgroup `{name}` has no cidrs: it matches nothing"),
            );
        }
        self.policy.addressgroups.push(group);
        (self.policy.addressgroups.len() - 1) as u32
    }

    fn cidr_list(&mut self, src: usize, v: &Spanned<DeValue<'_>>) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (text, span) in self.string_list(src, v, "cidrs") {
            match parse_cidr(&text) {
                Ok(net) => {
                    if !out.contains(&net) {
                        out.push(net);
                    }
                }
                Err(message) => self.error(src, span, message),
            }
        }
        out
    }

    fn read_rules(&mut self, src: usize, value: &Spanned<DeValue<'_>>) {
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
        // Point rule-level messages at the `[[rules]]` header rather than the first key.
        let text = &self.sources[src].text;
        let span = match text.get(..span.start).and_then(|t| t.rfind("[[")) {
            Some(h) if text[h..span.start].lines().count() <= 2 => h..span.end,
            _ => span,
        };
        let mut rule = Rule {
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
        };
        let mut name_span = span.clone();
        let mut ok = true;
        let mut seen = [false; 5]; // name, priority, src, dst, action
        let mut src_names = Vec::new();
        let mut dst_names = Vec::new();
        let mut priority_span = span.clone();
        let mut has_priority = false;
        let mut src_span = span.clone();
        let mut dst_span = span.clone();
        for (key, v) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => {
                    seen[0] = true;
                    name_span = v.span();
                    match self.expect_str(src, v, "name") {
                        Some(n) => {
                            if let Some(problem) = ident_problem(n) {
                                self.error(src, v.span(), format!("invalid rule name: {problem}"));
                                ok = false;
                            }
                            rule.name = n.to_owned();
                        }
                        None => ok = false,
                    }
                }
                "priority" => {
                    seen[1] = true;
                    has_priority = true;
                    priority_span = v.span();
                    match integer(v.get_ref()) {
                        Some(p) if (0..=i128::from(u32::MAX)).contains(&p) => {
                            rule.priority = p as u32
                        }
                        Some(p) => {
                            has_priority = false;
                            self.error(src, v.span(), format!("priority {p} is out of range: use an integer from 0 to 4294967295"));
                            ok = false;
                        }
                        None => {
                            has_priority = false;
                            self.error(
                                src,
                                v.span(),
                                format!(
                                    "`priority` must be an integer, not {}",
                                    type_name(v.get_ref())
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                "src" => {
                    seen[2] = true;
                    src_span = v.span();
                    src_names = self.string_list(src, v, "src");
                }
                "dst" => {
                    seen[3] = true;
                    dst_span = v.span();
                    dst_names = self.string_list(src, v, "dst");
                }
                "protocol" => {
                    if let Some(p) = self.expect_str(src, v, "protocol") {
                        match p {
                            "tcp" => rule.protocol = Protocol::Tcp,
                            "udp" => rule.protocol = Protocol::Udp,
                            "any" => rule.protocol = Protocol::Any,
                            other => {
                                self.error(src, v.span(), format!("invalid protocol `{other}`: expected \"tcp\", \"udp\" or \"any\""));
                                ok = false;
                            }
                        }
                    } else {
                        ok = false;
                    }
                }
                "ports" => match self.read_ports(src, v) {
                    Some(p) => rule.ports = p,
                    None => ok = false,
                },
                "action" => {
                    seen[4] = true;
                    match self.expect_str(src, v, "action") {
                        Some("permit") => rule.action = Action::Permit,
                        Some("deny") => rule.action = Action::Deny,
                        Some("reject") => rule.action = Action::Reject,
                        Some(other) => {
                            self.error(src, v.span(), format!("invalid action `{other}`: expected \"permit\", \"deny\" or \"reject\""));
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                "log" => rule.log = self.expect_bool(src, v, "log").unwrap_or(false),
                "watch" => rule.watch = self.expect_bool(src, v, "watch").unwrap_or(false),
                "description" => {
                    rule.description = self.expect_str(src, v, "description").map(str::to_owned);
                }
                other => self.unknown_key(
                    src,
                    key.span(),
                    other,
                    "a rule",
                    "name, priority, src, dst, protocol, ports, action, log, watch or description",
                ),
            }
        }
        let required = ["name", "priority", "src", "dst", "action"];
        for (i, key) in required.iter().enumerate() {
            if !seen[i] {
                let who = if rule.name.is_empty() {
                    "this rule".to_owned()
                } else {
                    format!("rule `{}`", rule.name)
                };
                self.error(src, span.clone(), format!("{who} has no `{key}`; every rule needs name, priority, src, dst and action"));
                ok = false;
            }
        }
        if seen[2] && src_names.is_empty() {
            self.error(
                src,
                src_span.clone(),
                "`src` is empty; use [\"any\"] to match every source",
            );
            ok = false;
        }
        if seen[3] && dst_names.is_empty() {
            self.error(
                src,
                dst_span.clone(),
                "`dst` is empty; use [\"any\"] to match every destination",
            );
            ok = false;
        }
        let at = self.location(src, &name_span);
        self.rules.push(PendingRule {
            rule,
            ok,
            src,
            at,
            name_span,
            priority_span,
            has_priority,
            src_items: src_names,
            dst_items: dst_names,
        });
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

    fn resolve_rules(&mut self) {
        let pending = std::mem::take(&mut self.rules);
        let mut by_name: HashMap<String, Location> = HashMap::new();
        let mut by_priority: HashMap<u32, (String, Location)> = HashMap::new();
        let mut resolved: Vec<(Rule, Location)> = Vec::new();
        for p in pending {
            let PendingRule {
                mut rule,
                mut ok,
                src,
                at,
                name_span,
                priority_span,
                has_priority,
                src_items,
                dst_items,
            } = p;
            if !rule.name.is_empty() {
                if let Some(prev) = by_name.get(&rule.name) {
                    let message = format!(
                        "rule `{}` is already defined at {prev}; rule names must be unique",
                        rule.name
                    );
                    self.error(src, name_span.clone(), message);
                    ok = false;
                } else {
                    by_name.insert(rule.name.clone(), at.clone());
                }
            }
            if has_priority {
                if let Some((other, prev)) = by_priority.get(&rule.priority) {
                    let message = format!(
                        "priority {} is already used by rule `{other}` at {prev}; every rule needs its own priority so that the order is unambiguous",
                        rule.priority
                    );
                    self.error(src, priority_span.clone(), message);
                    ok = false;
                } else {
                    by_priority.insert(rule.priority, (rule.name.clone(), at.clone()));
                }
            }
            match self.resolve_src(src, &src_items) {
                Some(s) => rule.src = s,
                None => ok = false,
            }
            match self.resolve_dst(src, &dst_items) {
                Some(d) => rule.dst = d,
                None => ok = false,
            }
            if ok {
                resolved.push((rule, at));
            }
        }
        resolved.sort_by_key(|(r, _)| r.priority);
        for (rule, at) in resolved {
            self.policy.rules.push(rule);
            self.rule_locations.push(at);
        }
    }

    fn any_problem(&mut self, src: usize, items: &[(String, Span)], key: &str) -> Option<bool> {
        let has_any = items.iter().any(|(n, _)| n == "any");
        if has_any && items.len() > 1 {
            let span = items
                .iter()
                .find(|(n, _)| n == "any")
                .map(|(_, s)| s.clone())
                .unwrap_or(0..0);
            self.error(
                src,
                span,
                format!("\"any\" cannot be combined with other names in `{key}`: it already matches everything"),
            );
            return None;
        }
        Some(has_any)
    }

    fn resolve_src(&mut self, src: usize, items: &[(String, Span)]) -> Option<SrcSpec> {
        if items.is_empty() {
            return None;
        }
        if self.any_problem(src, items, "src")? {
            return Some(SrcSpec::Any);
        }
        let mut groups = Vec::new();
        let mut ok = true;
        for (name, span) in items {
            match self.groups.get(name) {
                Some(GroupEntry {
                    kind: GroupKind::Smart,
                    index,
                    ..
                }) => {
                    if !groups.contains(index) {
                        groups.push(*index);
                    }
                }
                Some(entry) => {
                    let message = format!(
                        "`{name}` is {} (defined at {}); `src` accepts only smartgroups or \"any\"",
                        entry.kind.with_article(),
                        entry.at
                    );
                    self.error(src, span.clone(), message);
                    ok = false;
                }
                None => {
                    self.error(src, span.clone(), format!("unknown smartgroup `{name}` in `src`: no [smartgroups.{name}] is defined"));
                    ok = false;
                }
            }
        }
        ok.then_some(SrcSpec::Groups(groups))
    }

    fn resolve_dst(&mut self, src: usize, items: &[(String, Span)]) -> Option<DstSpec> {
        if items.is_empty() {
            return None;
        }
        if self.any_problem(src, items, "dst")? {
            return Some(DstSpec::Any);
        }
        let mut groups = Vec::new();
        let mut ok = true;
        for (name, span) in items {
            match self.groups.get(name) {
                Some(entry) => {
                    let g = match entry.kind {
                        GroupKind::Web => DstGroup::Web(entry.index),
                        GroupKind::Address => DstGroup::Address(entry.index),
                        GroupKind::Smart => DstGroup::Smart(entry.index),
                    };
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
                None => {
                    self.error(src, span.clone(), format!("unknown group `{name}` in `dst`: no webgroup, addressgroup or smartgroup has this name"));
                    ok = false;
                }
            }
        }
        ok.then_some(DstSpec::Groups(groups))
    }

    fn finish(mut self) -> Result<LoadedPolicy, LoadError> {
        if !self
            .diags
            .iter()
            .any(|(_, d)| d.severity == Severity::Error)
        {
            self.shadow_warnings();
        }
        self.diags
            .sort_by(|(a, da), (b, db)| (a, da.line, da.column).cmp(&(b, db.line, db.column)));
        let (errors, warnings): (Vec<_>, Vec<_>) = self
            .diags
            .into_iter()
            .map(|(_, d)| d)
            .partition(|d| d.severity == Severity::Error);
        if !errors.is_empty() {
            return Err(LoadError { errors, warnings });
        }
        Ok(LoadedPolicy {
            policy: self.policy,
            warnings,
            rule_locations: self.rule_locations,
            files: self.sources.into_iter().map(|s| s.path).collect(),
        })
    }

    /// A rule can never match when an earlier non-watch rule matches all of its traffic. This
    /// is decided conservatively, on names (not on what the groups contain): the earlier rule's
    /// `src` and `dst` list every group of the later one (or are "any"), its protocol and ports
    /// include the later one's. It never warns wrongly; it may miss rules that are shadowed by
    /// several earlier rules together, or by CIDRs that happen to overlap.
    fn shadow_warnings(&mut self) {
        let rules = &self.policy.rules;
        let mut found: Vec<(usize, usize)> = Vec::new();
        // Earlier non-watch rules indexed by one of their src groups ("any" separately).
        let mut any_src: Vec<usize> = Vec::new();
        let mut by_src: HashMap<u32, Vec<usize>> = HashMap::new();
        for (j, later) in rules.iter().enumerate() {
            let candidates: Box<dyn Iterator<Item = &usize>> = match &later.src {
                SrcSpec::Any => Box::new(any_src.iter()),
                SrcSpec::Groups(g) => Box::new(
                    any_src
                        .iter()
                        .chain(g.first().and_then(|g| by_src.get(g)).into_iter().flatten()),
                ),
            };
            let shadow = candidates
                .copied()
                .filter(|&i| covers(&rules[i], later))
                .min();
            if let Some(i) = shadow {
                found.push((i, j));
            }
            if !later.watch {
                match &later.src {
                    SrcSpec::Any => any_src.push(j),
                    SrcSpec::Groups(g) => {
                        for &g in g {
                            by_src.entry(g).or_default().push(j);
                        }
                    }
                }
            }
        }
        for (i, j) in found {
            let (earlier, later) = (&self.policy.rules[i], &self.policy.rules[j]);
            let message = format!(
                "rule `{}` (priority {}) can never match: rule `{}` (priority {}, at {}) comes first and matches all of its traffic",
                later.name, later.priority, earlier.name, earlier.priority, self.rule_locations[i]
            );
            let at = &self.rule_locations[j];
            self.diags.push((
                self.sources
                    .iter()
                    .position(|s| s.path == at.file)
                    .unwrap_or(0),
                Diagnostic {
                    severity: Severity::Warning,
                    file: at.file.clone(),
                    line: at.line,
                    column: at.column,
                    message,
                },
            ));
        }
    }
}

/// Whether every packet `later` matches is matched by `earlier` (decided on names).
fn covers(earlier: &Rule, later: &Rule) -> bool {
    if earlier.watch {
        return false;
    }
    let src = match (&earlier.src, &later.src) {
        (SrcSpec::Any, _) => true,
        (SrcSpec::Groups(_), SrcSpec::Any) => false,
        (SrcSpec::Groups(a), SrcSpec::Groups(b)) => b.iter().all(|g| a.contains(g)),
    };
    let dst = match (&earlier.dst, &later.dst) {
        (DstSpec::Any, _) => true,
        (DstSpec::Groups(_), DstSpec::Any) => false,
        (DstSpec::Groups(a), DstSpec::Groups(b)) => b.iter().all(|g| a.contains(g)),
    };
    if !(src && dst) {
        return false;
    }
    // Transport and ports: the set of (transport, port) pairs of `later` must be within
    // `earlier`'s.
    let proto = match (earlier.protocol, later.protocol) {
        (Protocol::Any, _) => true,
        (a, b) => a == b,
    };
    let ports = match (&earlier.ports, &later.ports) {
        (Ports::Any, _) => true,
        (Ports::Ranges(_), Ports::Any) => false,
        (Ports::Ranges(a), Ports::Ranges(b)) => b
            .iter()
            .all(|r| a.iter().any(|e| e.start <= r.start && r.end <= e.end)),
    };
    // A port-less `later` with protocol any also matches ICMP and the like, which an earlier
    // rule with ports cannot; that is covered by `ports` above (Ranges vs Any is false).
    proto && ports
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
                    "port range `{text}` is reversed: write `{end}-{start}`"
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
            "invalid port `{text}`: expected a number from 1 to 65535 or a range like \"8443-8445\""
        ));
    }
    match text.parse::<u32>() {
        Ok(0) => Err("port 0 is not a valid destination port: use 1 to 65535".to_owned()),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!("port {text} is out of range: use 1 to 65535")),
    }
}

fn integer(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// Parses a CIDR (or a bare address, taken as a host route); host bits must be zero.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = if text.contains('/') {
        text.parse::<IpNet>().map_err(|_| {
            format!("invalid CIDR `{text}`: expected an address and a prefix length, like 10.0.0.0/8 or fd00::/64")
        })?
    } else {
        let addr = text.parse::<std::net::IpAddr>().map_err(|_| {
            format!("invalid CIDR `{text}`: expected an address and a prefix length, like 10.0.0.0/8 or fd00::/64")
        })?;
        IpNet::from(addr)
    };
    if net.trunc() != net {
        return Err(format!(
            "CIDR `{text}` has host bits set: did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(net)
}
