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
//!
//! One `Loader` carries the state of a load through its phases, each in its own file:
//!
//! - this module: the entry points, the top-level sections of a policy and of a catalog, and
//!   the final sort of diagnostics into a [`LoadedPolicy`] or a [`LoadError`];
//! - `diagnostics`: [`Diagnostic`] and friends, byte spans to file:line:column;
//! - `toml_walk`: typed accessors over the parsed TOML that report what they reject;
//! - `groups`: smartgroups, webgroups and addressgroups;
//! - `rules`: `[[rules]]` entries and their ports;
//! - `resolve`: includes, unique group names, rule references, names and priorities;
//! - `shadow`: warnings about rules that an earlier rule shadows ([`shadowed_rules`]).

mod diagnostics;
mod groups;
mod resolve;
mod rules;
mod shadow;
mod toml_walk;

use std::path::{Path, PathBuf};

use foldhash::HashMap;
use toml::de::DeValue;
use toml::Spanned;

use crate::model::{DefaultAction, Mode, Policy, QuicMode, SniDnsCheck};

use crate::echo::Echo;
use diagnostics::{Source, Span};
use groups::{GroupDef, GroupEntry, GroupKind};
use rules::PendingRule;
use toml_walk::type_name;

pub use diagnostics::{
    Diagnostic, LoadError, Location, Severity, MAX_REPORTED_ERRORS, MAX_REPORTED_WARNINGS,
};
pub(crate) use groups::ipv4_mapped_equivalent;
pub use groups::parse_cidr;
pub use shadow::shadowed_rules;

/// Largest policy or catalog file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Most catalog files one policy may include.
pub const MAX_INCLUDES: usize = 64;
/// Longest group or rule name.
pub const MAX_IDENT_LEN: usize = 128;

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

/// Reads a policy or catalog file: a regular file of at most [`MAX_FILE_BYTES`], opened without
/// blocking (a FIFO, a device or a directory is refused, see [`crate::file`]).
fn read_bounded(path: &Path) -> Result<String, String> {
    crate::file::read_regular_text(path, MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read the file: {e}"))
}

/// The state of one load: the files read, the problems found so far, the policy being built
/// and what still has to be resolved.
#[derive(Debug, Default)]
struct Loader {
    sources: Vec<Source>,
    diags: Vec<(usize, Diagnostic)>,
    policy: Policy,
    groups: HashMap<String, GroupEntry>,
    group_defs: Vec<GroupDef>,
    rules: Vec<PendingRule>,
    rule_locations: Vec<Location>,
    /// Errors found, including those past the cap that `diags` does not keep.
    errors_found: usize,
    /// Warnings found, likewise.
    warnings_found: usize,
}

impl Loader {
    /// Reads the policy file, then its includes, then resolves names. Nothing is resolved after
    /// a syntax error: the file was not fully read, and half the names would look undefined.
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
                        "unknown key `{other}`; a policy has the sections [policy], [smartgroups.NAME], [webgroups.NAME], [addressgroups.NAME] and [[rules]]", other = Echo(other)),
                ),
            }
        }
        self.load_includes(src, origin, includes);
        self.index_groups();
        self.resolve_rules();
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
                                format!("invalid default_action `{other}`: expected \"deny\" or \"permit\"", other = Echo(other)),
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
                                format!("invalid mode `{other}`: expected \"enforce\" or \"log-only\"", other = Echo(other)),
                            ),
                        }
                    }
                }
                "quic" => {
                    if let Some(s) = self.expect_str(src, v, "quic") {
                        match s {
                            "inspect" => self.policy.quic = QuicMode::Inspect,
                            "block" => self.policy.quic = QuicMode::Block,
                            other => self.error(
                                src,
                                v.span(),
                                format!("invalid quic `{other}`: expected \"inspect\" or \"block\""),
                            ),
                        }
                    }
                }
                "sni_dns_check" => {
                    if let Some(s) = self.expect_str(src, v, "sni_dns_check") {
                        match SniDnsCheck::parse(s) {
                            Some(c) => self.policy.sni_dns_check = c,
                            None => self.error(
                                src,
                                v.span(),
                                format!("invalid sni_dns_check `{other}`: expected \"enforce\", \"log\" or \"off\"", other = Echo(s)),
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
                    format!("unknown key `{other}` in [policy]; expected default_action, mode, quic, sni_dns_check, include or description", other = Echo(other)),
                ),
            }
        }
    }

    /// Reads an included catalog: groups only, no rules, no further includes.
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
                        "unknown key `{other}` in an included catalog; a catalog has version, description, [webgroups.NAME] and [addressgroups.NAME]", other = Echo(other)),
                ),
            }
        }
    }

    /// Sorts the diagnostics into file order and decides. Shadowing is only looked for in a
    /// policy without errors: with rules missing, its warnings would be misleading.
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
        let (mut errors, mut warnings): (Vec<_>, Vec<_>) = self
            .diags
            .into_iter()
            .map(|(_, d)| d)
            .partition(|d| d.severity == Severity::Error);
        let more_errors = Loader::omitted(&errors, self.errors_found, Severity::Error);
        errors.extend(more_errors);
        let more_warnings = Loader::omitted(&warnings, self.warnings_found, Severity::Warning);
        warnings.extend(more_warnings);
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
}
