//! The typed walk over the parsed TOML: each accessor checks the type of a value, reports a
//! mismatch at the value's position and returns `None` (or an empty list), so that the caller
//! goes on with the rest of the file and every problem is found in one load.

use std::collections::BTreeMap;
use std::fmt;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::diagnostics::Span;
use super::diagnostics::MAX_REPORTED_ERRORS;
use super::{Loader, MAX_IDENT_LEN};
use crate::echo::Echo;

/// An event receiver for the first pass: it builds nothing, but decodes keys and scalars, whose
/// errors (an empty unquoted key, an unquoted string) the parser leaves to the decoder.
struct DecodeOnly<'i> {
    source: toml_parser::Source<'i>,
}

impl DecodeOnly<'_> {
    fn event(
        kind: toml_parser::parser::EventKind,
        span: toml_parser::Span,
        encoding: Option<toml_parser::decoder::Encoding>,
    ) -> toml_parser::parser::Event {
        toml_parser::parser::Event::new_unchecked(kind, encoding, span)
    }
}

impl toml_parser::parser::EventReceiver for DecodeOnly<'_> {
    fn simple_key(
        &mut self,
        span: toml_parser::Span,
        kind: Option<toml_parser::decoder::Encoding>,
        error: &mut dyn toml_parser::ErrorSink,
    ) {
        let event = Self::event(toml_parser::parser::EventKind::SimpleKey, span, kind);
        if let Some(raw) = self.source.get(event) {
            raw.decode_key(&mut (), error);
        }
    }

    fn scalar(
        &mut self,
        span: toml_parser::Span,
        kind: Option<toml_parser::decoder::Encoding>,
        error: &mut dyn toml_parser::ErrorSink,
    ) {
        let event = Self::event(toml_parser::parser::EventKind::Scalar, span, kind);
        if let Some(raw) = self.source.get(event) {
            let _ = raw.decode_scalar(&mut (), error);
        }
    }
}

/// Largest file parsed directly, without first counting its syntax errors. The direct parse
/// holds a token and an event for every token of the file, and its tree; on a file of syntax
/// errors the recovering parser emits more events than there are tokens, so the worst measured
/// (a file of `=` lines) takes some 80 bytes a byte: about 1 GB at this size, no more than the
/// counting pass takes on the largest file. Larger files are counted first.
const DIRECT_PARSE_MAX_BYTES: usize = 12 * 1024 * 1024;

/// The type of a value, with its article, for messages ("must be a string, not an integer").
pub(super) fn type_name(v: &DeValue<'_>) -> &'static str {
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

/// The value of a TOML integer, wide enough for any literal so that range checks see the real
/// number.
pub(super) fn integer(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// Why `name` cannot name a group or a rule, if it cannot.
pub(super) fn ident_problem(name: &str) -> Option<String> {
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
        return Some(format!(
            "`{name}` is reserved and cannot be used as a name",
            name = Echo(name)
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "invalid character {c:?} in the name `{name}`: names may contain ASCII letters, digits, `-`, `_` and `.`", name = Echo(name)));
    }
    None
}

impl Loader {
    /// Parses a whole file, recovering after syntax errors so that all of them are reported;
    /// `None` when there was any (a half-parsed file is not walked).
    ///
    /// A file of at most [`DIRECT_PARSE_MAX_BYTES`] is parsed once, keeping only its first
    /// error; only when there is one is it counted ([`Loader::too_many_syntax_errors`]) and
    /// parsed again for all of them. A valid file, the common case, is thus lexed and parsed
    /// once instead of twice. A larger file is counted first, as every file used to be.
    pub(super) fn parse<'t>(&mut self, src: usize, text: &'t str) -> Option<Spanned<DeTable<'t>>> {
        if text.len() <= DIRECT_PARSE_MAX_BYTES {
            if let Ok(table) = DeTable::parse(text) {
                return Some(table);
            }
        }
        if self.too_many_syntax_errors(src, text) {
            return None;
        }
        let (table, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Some(table);
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            self.error_with(src, span, || {
                let message = e.message().trim_end();
                if message == "duplicate key" {
                    "invalid TOML: duplicate key (it is already defined above)".to_owned()
                } else {
                    format!("invalid TOML: {message}")
                }
            });
        }
        None
    }

    /// A first pass of the TOML parser alone, which builds nothing: when a file has more syntax
    /// errors than are reported, they are reported from here (with the parser's short
    /// descriptions) and the file is not parsed again. The `toml` crate keeps every error of a
    /// recoverable parse, each with its own message: a 32 MiB file of `=` lines made 16 million
    /// of them, over 10 GB, before the cap on reported errors could apply.
    fn too_many_syntax_errors(&mut self, src: usize, text: &str) -> bool {
        let tokens = toml_parser::Source::new(text).lex().into_vec();
        let mut first: Vec<(Span, String)> = Vec::new();
        let mut count = 0usize;
        let mut sink = |e: toml_parser::ParseError| {
            count += 1;
            if first.len() <= MAX_REPORTED_ERRORS {
                let span = e
                    .unexpected()
                    .or(e.context())
                    .map_or(0..0, |s| s.start()..s.end());
                first.push((span, e.description().to_owned()));
            }
        };
        let source = toml_parser::Source::new(text);
        let mut receiver = DecodeOnly { source };
        toml_parser::parser::parse_document(&tokens, &mut receiver, &mut sink);
        if count <= MAX_REPORTED_ERRORS {
            // Few enough: the full parse below reports them with its complete messages.
            return false;
        }
        let reported = first.len();
        for (span, description) in first {
            self.error_with(src, span, || format!("invalid TOML: {description}"));
        }
        // The rest are only counted, for the "and N more" line.
        self.errors_found += count - reported;
        true
    }

    /// The table `value` holds; `what` names it in the error (formatted only then: callers pass
    /// `format_args!`, so that reading 100k groups formats no names).
    pub(super) fn expect_table<'v, 't>(
        &mut self,
        src: usize,
        value: &'v Spanned<DeValue<'t>>,
        what: impl fmt::Display,
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

    pub(super) fn expect_str<'v>(
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
                    format!(
                        "`{key}` must be a string, not {}",
                        type_name(other),
                        key = Echo(key)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn expect_bool(
        &mut self,
        src: usize,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    src,
                    value.span(),
                    format!(
                        "`{key}` must be true or false, not {}",
                        type_name(other),
                        key = Echo(key)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn expect_array<'v, 't>(
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
                    format!(
                        "`{key}` must be an array, not {}",
                        type_name(other),
                        key = Echo(key)
                    ),
                );
                None
            }
        }
    }

    /// An array of strings (a lone string counts as a one-element array).
    pub(super) fn string_list(
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
                            format!(
                                "`{key}` must hold strings, not {}",
                                type_name(other),
                                key = Echo(key)
                            ),
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
                        type_name(other),
                        key = Echo(key)
                    ),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn string_map(
        &mut self,
        src: usize,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(table) = self.expect_table(src, value, format_args!("`{}`", Echo(key))) else {
            return out;
        };
        for (k, v) in table.iter() {
            if let Some(s) = self.expect_str(
                src,
                v,
                &format!("{key}.{}", Echo(k.get_ref()), key = Echo(key)),
            ) {
                out.insert(k.get_ref().to_string(), s.to_owned());
            }
        }
        out
    }

    pub(super) fn unknown_key(
        &mut self,
        src: usize,
        span: Span,
        key: &str,
        what: impl fmt::Display,
        expected: &str,
    ) {
        self.error(
            src,
            span,
            format!(
                "unknown key `{key}` in {what}; expected {expected}",
                key = Echo(key)
            ),
        );
    }
}
