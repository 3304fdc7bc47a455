//! What a load reports: [`Diagnostic`]s with file, line and column, and the byte-offset to
//! line/column mapping behind them.
//!
//! The TOML parser gives byte spans; people want `file:line:col`. Each file read is kept as a
//! [`Source`] with its line starts, so that every error anywhere in the walk can be placed
//! without re-reading anything, and all of them can be gathered before deciding.

use std::fmt;
use std::path::PathBuf;

use super::Loader;
use crate::echo::escape_controls;

/// Most errors a load reports; past it they are counted and summed up in one last error.
/// A garbage file can hold millions of errors, and nobody reads past the first few.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Most warnings a load reports, likewise.
pub const MAX_REPORTED_WARNINGS: usize = 100;

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
        // The path comes from an include in the policy and the message quotes input: neither may
        // break the one-line-per-diagnostic form.
        write!(
            f,
            "{}:{}:{}: {kind}: {}",
            escape_controls(&self.file.display().to_string()),
            self.line,
            self.column,
            escape_controls(&self.message)
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

/// One loaded file: its path and where its lines start.
#[derive(Debug)]
pub(super) struct Source {
    pub(super) path: PathBuf,
    line_starts: Vec<usize>,
    pub(super) text: String,
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

    /// Where the line `back` lines above the one holding `offset` starts (the first line's
    /// start when there are fewer).
    pub(super) fn line_start_above(&self, offset: usize, back: usize) -> usize {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        self.line_starts[(line - 1).saturating_sub(back)]
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

pub(super) type Span = std::ops::Range<usize>;

impl Loader {
    pub(super) fn error(&mut self, src: usize, span: Span, message: impl Into<String>) {
        self.diag(Severity::Error, src, span.start, message.into());
    }

    /// [`Loader::error`] for a message that is only built when the error is kept (past the cap,
    /// a file with millions of errors costs no formatting).
    pub(super) fn error_with(&mut self, src: usize, span: Span, message: impl FnOnce() -> String) {
        if !self.over_cap(Severity::Error) {
            self.place(Severity::Error, src, span.start, message());
        }
    }

    pub(super) fn warn(&mut self, src: usize, span: Span, message: impl Into<String>) {
        self.diag(Severity::Warning, src, span.start, message.into());
    }

    fn diag(&mut self, severity: Severity, src: usize, offset: usize, message: String) {
        if !self.over_cap(severity) {
            self.place(severity, src, offset, message);
        }
    }

    /// Records a diagnostic already counted: its line and column, then the message.
    fn place(&mut self, severity: Severity, src: usize, offset: usize, message: String) {
        let source = &self.sources[src];
        let (line, column) = source.position(offset);
        let file = source.path.clone();
        self.push_diag(
            src,
            Diagnostic {
                severity,
                file,
                line,
                column,
                message,
            },
        );
    }

    /// Counts a diagnostic of `severity`; true when the cap is reached and it is not kept.
    pub(super) fn over_cap(&mut self, severity: Severity) -> bool {
        let (found, cap) = match severity {
            Severity::Error => (&mut self.errors_found, MAX_REPORTED_ERRORS),
            Severity::Warning => (&mut self.warnings_found, MAX_REPORTED_WARNINGS),
        };
        *found += 1;
        *found > cap
    }

    /// Records a diagnostic of file `src`, already counted by [`Loader::over_cap`].
    pub(super) fn push_diag(&mut self, src: usize, mut d: Diagnostic) {
        if let std::borrow::Cow::Owned(escaped) = escape_controls(&d.message) {
            d.message = escaped;
        }
        self.diags.push((src, d));
    }

    /// The last diagnostic of a capped kind: how many more were found, at the position of the
    /// last one reported (so that it sorts after them).
    pub(super) fn omitted(
        kept: &[Diagnostic],
        found: usize,
        severity: Severity,
    ) -> Option<Diagnostic> {
        let last = kept.last()?;
        let more = found.checked_sub(kept.len()).filter(|&n| n > 0)?;
        let (kind, cap) = match severity {
            Severity::Error => ("errors", MAX_REPORTED_ERRORS),
            Severity::Warning => ("warnings", MAX_REPORTED_WARNINGS),
        };
        Some(Diagnostic {
            severity,
            file: last.file.clone(),
            line: last.line,
            column: last.column,
            message: format!("and {more} more {kind} (only the first {cap} are reported)"),
        })
    }

    pub(super) fn location(&self, src: usize, span: &Span) -> Location {
        let source = &self.sources[src];
        let (line, column) = source.position(span.start);
        Location {
            file: source.path.clone(),
            line,
            column,
        }
    }

    pub(super) fn add_source(&mut self, path: PathBuf, text: &str) -> usize {
        self.sources.push(Source::new(path, text));
        self.sources.len() - 1
    }
}
