//! Names and name patterns: one normalisation for what policies say and what the wire carries.
//!
//! A name is normalised by dropping one trailing dot, lower-casing ASCII and converting
//! internationalised labels to punycode (IDNA, UTS #46 processing without hyphen checks, as web
//! clients do). The result must be a host name: labels of 1 to 63 characters from `a-z`, `0-9`,
//! `-` and `_`, not starting or ending with `-`, 253 characters at most in total.
//!
//! A pattern is a name in which some labels are `*`:
//! - a leading `*` (`*.openai.com`) matches one or more labels: any name strictly below
//!   `openai.com`, at any depth, but not `openai.com` itself;
//! - any other `*` (`bedrock-runtime.*.amazonaws.com`) matches exactly one label.
//!
//! The labels right of the last `*` must be longer than a public suffix: `*.com`, `*.co.uk` and
//! `api.*.com` are rejected, because they would match the names of unrelated owners. For the
//! same reason a pattern with a `*` is rejected when any name it matches (or any name below, for
//! a leading `*.`) is a public suffix, of the ICANN or the private section of the list:
//! `*.amazonaws.com` covers `s3.amazonaws.com`, under which anyone can name a bucket. Exact
//! names are never rejected for that: they name one host.

use std::borrow::Cow;
use std::fmt;

/// Longest name, in characters, without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;
/// Longest label, in characters.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name is not a valid host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left after dropping the trailing dot.
    #[error("the name is empty")]
    Empty,
    /// More than [`MAX_NAME_LEN`] characters.
    #[error("the name is {len} characters long; at most 253 are allowed")]
    TooLong {
        /// Length after normalisation.
        len: usize,
    },
    /// Two dots in a row, or a leading dot.
    #[error("the name has an empty label (a leading dot or two dots in a row)")]
    EmptyLabel,
    /// A label longer than [`MAX_LABEL_LEN`].
    #[error("the label `{label}` is {len} characters long; at most 63 are allowed")]
    LabelTooLong {
        /// The label (truncated to 70 characters).
        label: String,
        /// Its length.
        len: usize,
    },
    /// A character that has no place in a host name.
    #[error("invalid character {ch:?}: names may contain letters, digits, `-` and `_`")]
    InvalidChar {
        /// The character.
        ch: char,
    },
    /// A label that starts or ends with a hyphen.
    #[error("the label `{label}` starts or ends with `-`")]
    HyphenAtEdge {
        /// The label.
        label: String,
    },
    /// The internationalised form cannot be converted (or an `xn--` label is not valid punycode).
    #[error("not a valid internationalised name (IDNA conversion failed)")]
    Idna,
}

/// Normalises a name from a policy or from the wire (TLS SNI, HTTP Host without its port): one
/// trailing dot dropped, ASCII lower case, IDNA to punycode; invalid names are rejected.
///
/// Borrows (allocates nothing) when the input is already normal, apart from a trailing dot.
pub fn normalize_name(input: &str) -> Result<Cow<'_, str>, NameError> {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.len() > 4 * MAX_NAME_LEN {
        // Far too long whatever IDNA would make of it; do not spend time on it.
        return Err(NameError::TooLong { len: trimmed.len() });
    }
    if let Some(result) = check_normal(trimmed) {
        return result.map(|()| Cow::Borrowed(trimmed));
    }
    normalize_general(trimmed)
}

/// [`normalize_name`] of a name without its trailing dot, without the fast path.
fn normalize_general(trimmed: &str) -> Result<Cow<'_, str>, NameError> {
    match scan_ascii(trimmed) {
        Scan::Normal => {
            check_structure(trimmed)?;
            Ok(Cow::Borrowed(trimmed))
        }
        Scan::NeedsLowercase => {
            let lower = trimmed.to_ascii_lowercase();
            check_structure(&lower)?;
            if has_punycode_label(&lower) {
                check_punycode(&lower)?;
            }
            Ok(Cow::Owned(lower))
        }
        Scan::HasPunycode => {
            check_structure(trimmed)?;
            check_punycode(trimmed)?;
            Ok(Cow::Borrowed(trimmed))
        }
        Scan::Invalid(ch) => Err(NameError::InvalidChar { ch }),
        Scan::NonAscii => {
            let ascii = idna::domain_to_ascii(trimmed).map_err(|_| NameError::Idna)?;
            if let Some(ch) = ascii.chars().find(|&c| {
                !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
            }) {
                return Err(NameError::InvalidChar { ch });
            }
            check_structure(&ascii)?;
            Ok(Cow::Owned(ascii))
        }
    }
}

/// The already-normal fast path, 8 bytes at a time: `Some(Ok(()))` for a name that is lower-case
/// ASCII host name without `xn--` labels (the common case on the wire), `None` when the name
/// needs the general path (which also names the problem of an invalid one).
fn check_normal(s: &str) -> Option<Result<(), NameError>> {
    let bytes = s.as_bytes();
    let (first, last) = match bytes {
        [] => return Some(Err(NameError::Empty)),
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
    };
    if bytes.len() > MAX_NAME_LEN || matches!(first, b'.' | b'-') || matches!(last, b'.' | b'-') {
        return None;
    }
    let shape = scan_shape(bytes);
    if shape.invalid || shape.empty_label || shape.hyphen_at_edge {
        return None;
    }
    if shape.double_hyphen && s.split('.').any(|l| l.starts_with("xn--")) {
        // Punycode: let the general path check it.
        return None;
    }
    if bytes.len() > MAX_LABEL_LEN && s.split('.').any(|l| l.len() > MAX_LABEL_LEN) {
        return None;
    }
    Some(Ok(()))
}

/// What [`scan_shape`] found in a name (leading and trailing bytes aside).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// A byte outside `a-z0-9-_.`.
    pub(crate) invalid: bool,
    /// Two dots in a row.
    pub(crate) empty_label: bool,
    /// `.-` or `-.`.
    pub(crate) hyphen_at_edge: bool,
    /// `--` (as in `xn--`).
    pub(crate) double_hyphen: bool,
}

/// One pass over a name, 8 bytes at a time.
#[inline]
pub(crate) fn scan_shape(bytes: &[u8]) -> Shape {
    // Per byte, a flag in its high bit; pairs are flagged on their first byte.
    let (mut invalid, mut empty_label, mut hyphen_at_edge, mut double_hyphen) = (0, 0, 0, 0);
    // Flags of the last byte of the previous word, moved to the first byte's position.
    let (mut prev_dot, mut prev_hyphen) = (0u64, 0u64);
    let words = bytes.chunks_exact(8);
    let rest = words.remainder().len();
    let tail = (rest > 0).then(|| {
        // The last bytes, padded with letters (valid, and they pair with anything). When the
        // name is long enough, one read of its last 8 bytes, shifted.
        const LETTERS: u64 = 0x6161_6161_6161_6161;
        if let Some(last) = bytes.last_chunk::<8>() {
            (u64::from_le_bytes(*last) >> (8 * (8 - rest))) | (LETTERS << (8 * rest))
        } else {
            bytes
                .iter()
                .rev()
                .fold(LETTERS, |w, &b| (w << 8) | u64::from(b))
        }
    });
    let words = words
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        .chain(tail);
    for w in words {
        let (valid, dot, hyphen) = classify(w);
        // Byte i pairs with byte i + 1 (the next byte's flag shifted down onto it), and the first
        // byte with the last one of the previous word.
        invalid |= !valid & HIGH;
        empty_label |= dot & (dot >> 8) | prev_dot & dot & 0x80;
        hyphen_at_edge |= dot & (hyphen >> 8) | hyphen & (dot >> 8);
        hyphen_at_edge |= (prev_dot & hyphen | prev_hyphen & dot) & 0x80;
        double_hyphen |= hyphen & (hyphen >> 8) | prev_hyphen & hyphen & 0x80;
        prev_dot = dot >> 56;
        prev_hyphen = hyphen >> 56;
    }
    Shape {
        invalid: invalid != 0,
        empty_label: empty_label != 0,
        hyphen_at_edge: hyphen_at_edge != 0,
        double_hyphen: double_hyphen != 0,
    }
}

const HIGH: u64 = 0x8080_8080_8080_8080;

/// Classifies the 8 bytes of `w` at once; each result has the high bit of a byte set when the
/// byte is: a valid name byte (`a-z0-9-_.`), a dot, a hyphen.
#[inline]
fn classify(w: u64) -> (u64, u64, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let ascii = !w & HIGH;
    // With the high bits cleared no byte operation below borrows from its neighbour.
    let x = w & !HIGH;
    let at_least = |c: u8| ((x | HIGH) - ONES * u64::from(c)) & HIGH;
    let equal = |c: u8| !((x ^ (ONES * u64::from(c))) | HIGH).wrapping_sub(ONES) & HIGH;
    let lower = at_least(b'a') & !at_least(b'z' + 1);
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    let dot = equal(b'.') & ascii;
    let hyphen = equal(b'-') & ascii;
    let valid = (lower | digit | dot | hyphen | equal(b'_')) & ascii;
    (valid, dot, hyphen)
}

enum Scan {
    Normal,
    NeedsLowercase,
    HasPunycode,
    Invalid(char),
    NonAscii,
}

fn scan_ascii(s: &str) -> Scan {
    let mut upper = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {}
            b'A'..=b'Z' => upper = true,
            0x80.. => return Scan::NonAscii,
            _ => {
                // ASCII, so the byte is the character.
                let _ = i;
                return Scan::Invalid(char::from(b));
            }
        }
    }
    if upper {
        Scan::NeedsLowercase
    } else if has_punycode_label(s) {
        Scan::HasPunycode
    } else {
        Scan::Normal
    }
}

fn has_punycode_label(s: &str) -> bool {
    s.split('.')
        .any(|l| l.len() >= 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
}

fn check_punycode(s: &str) -> Result<(), NameError> {
    match idna::domain_to_ascii(s) {
        Ok(back) if back == s => Ok(()),
        _ => Err(NameError::Idna),
    }
}

/// Lengths and hyphens; characters were checked by the caller.
fn check_structure(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: s.len() });
    }
    for label in s.split('.') {
        check_label(label)?;
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong {
            label: label.chars().take(70).collect(),
            len: label.len(),
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::HyphenAtEdge {
            label: label.to_owned(),
        });
    }
    Ok(())
}

/// Why a name pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The fixed part is not a valid name.
    #[error("{0}")]
    Name(#[from] NameError),
    /// A `*` next to other characters in the same label.
    #[error("`*` must be a whole label (as in `*.example.com` or `api.*.example.com`), not part of one (`{label}`)")]
    PartialWildcard {
        /// The offending label.
        label: String,
    },
    /// Nothing fixed to the right of the last `*`.
    #[error("a pattern must end with fixed labels: `*` cannot be the last label")]
    TrailingWildcard,
    /// The names the pattern matches (or those below, for a leading `*.`) include a public
    /// suffix, under which anyone can register names.
    #[error("the pattern covers the public suffix `{suffix}`, under which anyone can register names; name the hosts you mean (for example `bedrock-runtime.us-east-1.amazonaws.com`), or put a single-label `*` where one label varies (`api.*.example.com`) if no public suffix can form there")]
    CoversPublicSuffix {
        /// A public suffix the pattern covers.
        suffix: String,
    },
    /// The labels right of the last `*` are a public suffix.
    #[error("the pattern is wider than the public suffix `{suffix}`: it would match names of unrelated owners; name a registrable domain (for example `*.example.{suffix}`)")]
    WiderThanPublicSuffix {
        /// The public suffix the pattern covers.
        suffix: String,
    },
}

/// A normalised name pattern: an exact name, `*.suffix` (any depth below), or a name with
/// single-label `*` wildcards in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamePattern {
    text: String,
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl NamePattern {
    /// Parses and normalises a pattern; see the module documentation for the grammar.
    pub fn parse(input: &str) -> Result<NamePattern, PatternError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(NameError::Empty.into());
        }
        if !trimmed.contains('*') {
            let name = normalize_name(trimmed)?;
            return Ok(NamePattern {
                text: name.into_owned(),
            });
        }
        // Split into wildcard labels and runs of fixed labels; normalise each run as a name.
        let labels: Vec<&str> = trimmed.split('.').collect();
        for label in &labels {
            if label.contains('*') && *label != "*" {
                return Err(PatternError::PartialWildcard {
                    // Quoted in messages: bounded and escaped like all input.
                    label: crate::echo::Echo(label).to_string(),
                });
            }
        }
        if labels.last() == Some(&"*") {
            return Err(PatternError::TrailingWildcard);
        }
        let mut out: Vec<String> = Vec::new();
        let mut run: Vec<&str> = Vec::new();
        let flush = |run: &mut Vec<&str>, out: &mut Vec<String>| -> Result<(), PatternError> {
            if !run.is_empty() {
                let joined = run.join(".");
                let norm = normalize_name(&joined)?;
                out.push(norm.into_owned());
                run.clear();
            }
            Ok(())
        };
        for label in &labels {
            if *label == "*" {
                flush(&mut run, &mut out)?;
                out.push("*".to_owned());
            } else {
                run.push(label);
            }
        }
        flush(&mut run, &mut out)?;
        let text = out.join(".");
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: text.len() }.into());
        }
        let fixed = text
            .rsplit_once("*.")
            .map(|(_, right)| right)
            .unwrap_or(&text);
        if let Some(suffix) = public_suffix_of(fixed) {
            if suffix.len() == fixed.len() {
                return Err(PatternError::WiderThanPublicSuffix {
                    suffix: suffix.to_owned(),
                });
            }
        }
        if let Some(suffix) = crate::suffix::covered_suffix(&text) {
            return Err(PatternError::CoversPublicSuffix { suffix });
        }
        Ok(NamePattern { text })
    }

    /// A warning for a single-label `*` that can stand for a label which, with the labels right
    /// of it, spells a public suffix (`bedrock-runtime.*.amazonaws.com` with `*` = `s3`): the
    /// pattern then matches a name that whoever registers under that suffix chooses.
    pub fn suffix_warning(&self) -> Option<String> {
        if self.is_exact() {
            return None;
        }
        let (label, suffix) = crate::suffix::wildcard_forming_suffix(&self.text)?;
        Some(format!(
            "in `{}`, `*` can stand for `{label}`, and `{suffix}` is a public suffix: the pattern then matches names that anyone registering under it can choose; list the labels you mean instead of `*` (for AWS, the region names)",
            self.text
        ))
    }

    /// The normalised text, e.g. `*.openai.com`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern has no wildcard.
    pub fn is_exact(&self) -> bool {
        !self.text.contains('*')
    }

    /// True for a leading `*.`: one or more labels, any depth.
    pub fn is_any_depth(&self) -> bool {
        self.text.starts_with("*.")
    }

    /// The labels after a leading `*.` (all labels when there is none), left to right; single
    /// label wildcards appear as `"*"`.
    pub fn fixed_labels(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
        self.text
            .strip_prefix("*.")
            .unwrap_or(&self.text)
            .split('.')
    }

    /// Whether a normalised name matches the pattern.
    pub fn matches(&self, name: &str) -> bool {
        let mut pattern = self.fixed_labels().rev();
        let mut name_labels = name.split('.').rev();
        loop {
            match (pattern.next(), name_labels.next()) {
                (None, None) => return !self.is_any_depth(),
                (None, Some(_)) => return self.is_any_depth(),
                (Some(_), None) => return false,
                (Some(p), Some(n)) => {
                    if p != "*" && p != n {
                        return false;
                    }
                }
            }
        }
    }
}

/// The public suffix of a normalised name, by the Public Suffix List (ICANN and private
/// sections; names under unknown top-level domains have their last label as suffix).
fn public_suffix_of(name: &str) -> Option<&str> {
    psl::suffix_str(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_names_are_borrowed() {
        for n in [
            "api.openai.com",
            "a",
            "x_y.example.com",
            "r3---sn-ab.googlevideo.com",
        ] {
            assert!(
                matches!(normalize_name(n), Ok(Cow::Borrowed(s)) if s == n),
                "{n}"
            );
        }
        assert!(matches!(
            normalize_name("api.openai.com."),
            Ok(Cow::Borrowed("api.openai.com"))
        ));
    }

    #[test]
    fn names_are_lowercased_and_punycoded() {
        assert_eq!(normalize_name("API.OpenAI.com.").unwrap(), "api.openai.com");
        assert_eq!(
            normalize_name("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_name("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_name("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_name("XN--BCHER-KVA.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert_eq!(normalize_name("."), Err(NameError::Empty));
        assert_eq!(normalize_name("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(normalize_name(".a"), Err(NameError::EmptyLabel));
        assert_eq!(normalize_name("a.b.."), Err(NameError::EmptyLabel));
        assert_eq!(
            normalize_name("a b"),
            Err(NameError::InvalidChar { ch: ' ' })
        );
        assert_eq!(
            normalize_name("a:443"),
            Err(NameError::InvalidChar { ch: ':' })
        );
        assert_eq!(
            normalize_name("[::1]"),
            Err(NameError::InvalidChar { ch: '[' })
        );
        assert_eq!(
            normalize_name("-a.com"),
            Err(NameError::HyphenAtEdge { label: "-a".into() })
        );
        let long_label = "a".repeat(64);
        assert!(matches!(
            normalize_name(&format!("{long_label}.com")),
            Err(NameError::LabelTooLong { len: 64, .. })
        ));
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(normalize_name(&long), Err(NameError::TooLong { len: 259 }));
        assert_eq!(normalize_name("xn--zz.example"), Err(NameError::Idna));
        assert!(normalize_name("a\u{0}b").is_err());
    }

    /// The fast path answers exactly as the general one, and takes the usual names.
    #[test]
    fn fast_path_agrees_with_general_path() {
        use proptest::prelude::*;
        let valid = prop::sample::select(vec!['a', 'b', 'n', 'x', 'z', '0', '9', '-', '_', '.']);
        let any = prop::sample::select(vec![
            'a', 'n', 'x', '-', '.', 'A', 'Z', ' ', '*', '/', ':', '@', '[', '`', '{', '\u{7f}',
            '\u{e9}',
        ]);
        // Mostly names of valid bytes only (the fast path's business), some with any byte.
        let chars = prop_oneof![
            3 => prop::collection::vec(valid, 0..90),
            1 => prop::collection::vec(any, 0..90),
        ];
        let name = chars.prop_map(|chars| chars.into_iter().collect::<String>());
        let taken = std::cell::Cell::new(0u32);
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 20_000,
            failure_persistence: None,
            ..Default::default()
        });
        runner
            .run(&name, |s| {
                let general = normalize_general(&s);
                if let Some(fast) = check_normal(&s) {
                    taken.set(taken.get() + 1);
                    prop_assert_eq!(fast.map(|()| Cow::Borrowed(s.as_str())), general);
                }
                Ok(())
            })
            .unwrap();
        // The comparison above must not be vacuous.
        assert!(taken.get() > 1000, "{}", taken.get());
        for n in [
            "bedrock-runtime.us-east-1.cloud.example",
            "a",
            "a.b",
            "x_y.example.com",
            "r3---sn-ab.googlevideo.com",
            "xn-a.example",
            "a-xn--b.example",
            &format!("{}.{}.com", "a".repeat(63), "b".repeat(63)),
        ] {
            assert_eq!(check_normal(n), Some(Ok(())), "{n}");
        }
        for n in [
            "xn--bcher-kva.example",
            "a.xn--bcher-kva",
            "a..b",
            "a.-b",
            "a-.b",
            "-a",
            "a-",
            "A.b",
            "a b",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert_eq!(check_normal(n), None, "{n}");
        }
    }

    #[test]
    fn patterns_parse_and_match() {
        let p = NamePattern::parse("*.OpenAI.com.").unwrap();
        assert_eq!(p.as_str(), "*.openai.com");
        assert!(p.matches("api.openai.com"));
        assert!(p.matches("a.b.openai.com"));
        assert!(!p.matches("openai.com"));
        assert!(!p.matches("evilopenai.com"));
        let p = NamePattern::parse("bedrock-runtime.*.cloud.example").unwrap();
        assert!(p.matches("bedrock-runtime.us-east-1.cloud.example"));
        assert!(!p.matches("bedrock-runtime.a.b.cloud.example"));
        assert!(!p.matches("bedrock-runtime.cloud.example"));
        let p = NamePattern::parse("api.openai.com").unwrap();
        assert!(p.is_exact());
        assert!(p.matches("api.openai.com"));
        assert!(!p.matches("x.api.openai.com"));
    }

    #[test]
    fn wide_patterns_are_rejected() {
        for (p, suffix) in [("*.com", "com"), ("*.co.uk", "co.uk"), ("api.*.com", "com")] {
            assert_eq!(
                NamePattern::parse(p),
                Err(PatternError::WiderThanPublicSuffix {
                    suffix: suffix.into()
                }),
                "{p}"
            );
        }
        // The private section of the list counts: anyone can create names there.
        for p in ["*.s3.amazonaws.com", "*.herokuapp.com", "*.internal"] {
            assert!(
                matches!(
                    NamePattern::parse(p),
                    Err(PatternError::WiderThanPublicSuffix { .. })
                ),
                "{p}"
            );
        }
        assert!(NamePattern::parse("*.corp.internal").is_ok());
        assert!(NamePattern::parse("*.openai.com").is_ok());
        // A pattern whose names (or names below) include a public suffix: `*.amazonaws.com`
        // covers `s3.amazonaws.com`; the single-label `*` of `bedrock-runtime.*.amazonaws.com`
        // reaches `bedrock-runtime.compute.amazonaws.com` (`*.compute.amazonaws.com` is listed).
        for p in [
            "*.amazonaws.com",
            "bedrock-runtime.*.amazonaws.com",
            "*.r.appspot.com",
        ] {
            assert!(
                matches!(
                    NamePattern::parse(p),
                    Err(PatternError::CoversPublicSuffix { .. })
                ),
                "{p}: {:?}",
                NamePattern::parse(p)
            );
        }
        let message = NamePattern::parse("*.amazonaws.com")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(".amazonaws.com`") && message.contains("name the hosts you mean"),
            "{message}"
        );
        // Exact names name one host, even a public suffix or a name below one.
        for p in [
            "s3.amazonaws.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "my-bucket.s3.amazonaws.com",
        ] {
            assert!(NamePattern::parse(p).is_ok(), "{p}");
        }
        // Below a name that only its owner names, a suffix pattern is fine.
        assert!(NamePattern::parse("*.my-bucket.s3.amazonaws.com").is_ok());
        assert!(NamePattern::parse("*.example.co.uk").is_ok());
        assert_eq!(NamePattern::parse("*"), Err(PatternError::TrailingWildcard));
        assert_eq!(
            NamePattern::parse("a.*"),
            Err(PatternError::TrailingWildcard)
        );
        assert_eq!(
            NamePattern::parse("api*.openai.com"),
            Err(PatternError::PartialWildcard {
                label: "api*".into()
            })
        );
    }
}
