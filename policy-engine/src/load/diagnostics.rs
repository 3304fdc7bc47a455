//! What a load reports: [`Diagnostic`]s with file, line and column, and the byte-offset to
//! line/column mapping behind them.
//!
//! The TOML parser gives byte spans; people want `file:line:col`. Each file read is kept as a
//! [`Source`] with its line starts, so that every error anywhere in the walk can be placed
//! without re-reading anything, and all of them can be gathered before deciding.

use std::fmt;
use std::path::PathBuf;

use super::Loader;

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

    pub(super) fn warn(&mut self, src: usize, span: Span, message: impl Into<String>) {
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
