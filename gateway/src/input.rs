//! Handling of operator-supplied input at the edges: the command line and the files it names.
//!
//! Two rules hold everywhere the gateway reports on such input:
//! - Input echoed in an error message goes through [`echo`] / [`echo_path`]: control characters
//!   are escaped (a value holding a newline cannot forge a second log or error line) and the
//!   echo is bounded (a megabyte argument does not become a megabyte message).
//! - Files read as configuration or policy are opened with [`open_regular`]: a FIFO, a device or
//!   a directory is refused instead of blocking the reader forever (a FIFO with no writer) or
//!   reading without end (`/dev/zero`).

use std::path::Path;

/// Characters of an operator-supplied value kept in an error message; the rest is summarised.
pub const MAX_ECHO_CHARS: usize = 80;
/// Characters of a path kept in an error message (paths are legitimately longer than values).
pub const MAX_ECHO_PATH_CHARS: usize = 256;
/// Characters kept of a message from a parser that may quote its input (TOML errors).
pub const MAX_ECHO_MESSAGE_CHARS: usize = 512;

/// `s` made safe to embed in a one-line message: control characters (and the Unicode line
/// separators) escaped as in Rust string literals, cut to [`MAX_ECHO_CHARS`] with a note of what
/// was left out. No surrounding quotes.
pub fn echo(s: &str) -> String {
    echo_bounded(s, MAX_ECHO_CHARS)
}

/// [`echo`] with another bound, in characters.
pub fn echo_bounded(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    for c in chars.by_ref().take(max_chars) {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    let rest = chars.as_str();
    if !rest.is_empty() {
        out.push_str(&format!("... ({} more bytes)", rest.len()));
    }
    out
}

/// [`echo`] of a path (non-UTF-8 bytes shown as U+FFFD).
pub fn echo_path(path: &Path) -> String {
    echo_bounded(&path.to_string_lossy(), MAX_ECHO_PATH_CHARS)
}

/// Opens `path` for reading only if it is a regular file, without blocking on a FIFO. The one
/// implementation lives in the policy engine, which reads policy files and their includes the
/// same way.
pub use policy_engine::file::{open_regular, read_regular_text};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_control_characters() {
        assert_eq!(echo("a\nb\r\u{1b}[2J\t"), "a\\nb\\r\\u{1b}[2J\\t");
        assert_eq!(echo("plain é"), "plain é");
        assert!(!echo("x\u{2028}y").contains('\u{2028}'));
    }

    #[test]
    fn echo_is_bounded() {
        let long = "x".repeat(10_000);
        let e = echo(&long);
        assert!(e.len() < 120, "{e}");
        assert!(e.ends_with(&format!("({} more bytes)", 10_000 - MAX_ECHO_CHARS)));
        let short = "y".repeat(MAX_ECHO_CHARS);
        assert_eq!(echo(&short), short);
    }

    #[test]
    fn the_open_flag_is_the_c_librarys() {
        assert_eq!(policy_engine::file::O_NONBLOCK, libc::O_NONBLOCK);
    }
}
