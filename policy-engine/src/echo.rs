//! Input quoted back in messages, bounded and escaped.
//!
//! Error messages quote what the author wrote so that they can find it. That text is hostile
//! input like the rest of the file: a 10 MB "name" must not become a 10 MB message, and a raw
//! newline or terminal escape in it must not forge lines in a terminal or a log. [`Echo`] is the
//! one way messages quote input; [`escape_controls`] is the backstop applied to every message.

use std::fmt;

/// Most characters of input quoted in one message; the rest is elided.
pub const MAX_ECHO_CHARS: usize = 80;

/// Displays input bounded to [`MAX_ECHO_CHARS`] characters with control characters escaped
/// (`\n`, `\u{1b}`), followed by `…` and the full length when it was cut.
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_ECHO_CHARS) {
            write_char(f, c)?;
        }
        if chars.next().is_some() {
            write!(f, "… ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    if needs_escape(c) {
        write!(f, "{}", c.escape_default())
    } else {
        fmt::Write::write_char(f, c)
    }
}

/// Control characters, and the Unicode line and paragraph separators that some terminals and
/// log viewers break lines at.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with control characters escaped; borrowed when there is none.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert_eq!(Echo("api.openai.com").to_string(), "api.openai.com");
        assert_eq!(Echo("bücher").to_string(), "bücher");
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(Echo("a\nb\r\u{1b}[2J").to_string(), "a\\nb\\r\\u{1b}[2J");
        assert_eq!(Echo("x\u{2028}y").to_string(), "x\\u{2028}y");
        assert_eq!(escape_controls("a\tb"), "a\\tb");
        assert!(matches!(
            escape_controls("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn long_text_is_cut() {
        let long = "é".repeat(10_000);
        let shown = Echo(&long).to_string();
        assert_eq!(shown.chars().filter(|&c| c == 'é').count(), MAX_ECHO_CHARS);
        assert!(shown.ends_with("… (20000 bytes)"), "{shown}");
        let exact = "a".repeat(MAX_ECHO_CHARS);
        assert_eq!(Echo(&exact).to_string(), exact);
    }
}
