//! Which public suffixes a name pattern reaches.
//!
//! The `psl` crate answers "what is the public suffix of this name", which is enough to refuse
//! `*.com` but not `*.amazonaws.com`: that pattern's own suffix is `com`, yet the names it covers
//! include `s3.amazonaws.com` and other suffixes of the list's private section, under which
//! anyone may register a name (`evil-bucket.s3.amazonaws.com`). Answering "is there a public
//! suffix among the names this pattern matches" needs the list itself, walked as a tree: the
//! rules are embedded (`data/public_suffix_list.dat`) and built into a trie of labels, right to
//! left, on first use.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The rules of the Public Suffix List, comments removed.
const LIST: &str = include_str!("../data/public_suffix_list.dat");

/// Most trie nodes one question visits. The whole trie has some 12 000 nodes, so this is never
/// reached by a real pattern; it only bounds a hostile one (`a.*.*.*.com`-like shapes are refused
/// earlier, as wider than `com`).
const MAX_VISITS: usize = 1 << 16;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, u32>,
    /// A rule names this node.
    rule: bool,
    /// A `*.` rule: every label below this node is a suffix (unless an exception).
    wildcard: bool,
    /// A `!` rule: not a suffix, whatever the parent's wildcard says.
    exception: bool,
}

#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
}

fn trie() -> &'static Trie {
    static TRIE: OnceLock<Trie> = OnceLock::new();
    TRIE.get_or_init(|| Trie::build(LIST))
}

impl Trie {
    fn build(list: &str) -> Trie {
        let mut trie = Trie {
            nodes: vec![Node::default()],
        };
        for line in list.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let (exception, rule) = match line.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, line),
            };
            let (wildcard, rule) = match rule.strip_prefix("*.") {
                Some(r) => (true, r),
                None => (false, rule),
            };
            // Names are compared in their normal form: IDNA labels as punycode.
            let Ok(ascii) = idna::domain_to_ascii(rule) else {
                continue;
            };
            let node = trie.insert(&ascii);
            let node = &mut trie.nodes[node];
            match (exception, wildcard) {
                (true, _) => node.exception = true,
                (false, true) => node.wildcard = true,
                (false, false) => node.rule = true,
            }
        }
        trie
    }

    fn insert(&mut self, name: &str) -> usize {
        let mut at = 0;
        for label in name.rsplit('.') {
            let next = self.nodes.len() as u32;
            let child = *self.nodes[at].children.entry(label.into()).or_insert(next);
            if child == next {
                self.nodes.push(Node::default());
            }
            at = child as usize;
        }
        at
    }
}

/// A question: the labels of a pattern, right to left (`*` for a single-label wildcard), and
/// whether names below the last of them count too (a leading `*.`).
struct Search<'a> {
    trie: &'a Trie,
    labels: Vec<&'a str>,
    below: bool,
    visits: usize,
    /// The labels of the current node, right to left.
    path: Vec<&'a str>,
}

impl<'a> Search<'a> {
    /// A public suffix, as text, among the names `labels` match (and below, with `below`).
    fn run(mut self) -> Option<String> {
        self.visit(Some(0), false, 0)
    }

    /// `node` is the trie node of the name `path` (`None` for a name below a wildcard rule
    /// that the list says nothing more about), `suffix` whether that name is a public suffix.
    fn visit(&mut self, node: Option<usize>, suffix: bool, depth: usize) -> Option<String> {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return None;
        }
        if depth == self.labels.len() {
            if !self.below {
                return suffix.then(|| self.name());
            }
            return node.and_then(|n| self.below_node(n));
        }
        let n = node?;
        let label = self.labels[depth];
        let trie = self.trie;
        let wildcard = trie.nodes[n].wildcard;
        let children: Vec<(&'a str, usize)> = if label == "*" {
            let mut all: Vec<(&'a str, usize)> = trie.nodes[n]
                .children
                .iter()
                .map(|(l, &c)| (&**l, c as usize))
                .collect();
            // The same answer on every run, whatever the hash order.
            all.sort_unstable();
            all
        } else {
            trie.nodes[n]
                .children
                .get_key_value(label)
                .map(|(l, &c)| (&**l, c as usize))
                .into_iter()
                .collect()
        };
        let explicit = !children.is_empty();
        for (l, c) in children {
            let child = &trie.nodes[c];
            let is_suffix = child.rule || (wildcard && !child.exception);
            self.path.push(l);
            let found = self.visit(Some(c), is_suffix, depth + 1);
            self.path.pop();
            if found.is_some() {
                return found;
            }
        }
        if wildcard && (label == "*" || !explicit) {
            // Any other label under a wildcard rule is a suffix the list has no node for.
            self.path.push(label);
            let found = self.visit(None, true, depth + 1);
            self.path.pop();
            return found;
        }
        None
    }

    /// The first public suffix strictly below node `n`.
    fn below_node(&mut self, n: usize) -> Option<String> {
        let trie = self.trie;
        if trie.nodes[n].wildcard {
            self.path.push("*");
            let name = self.name();
            self.path.pop();
            return Some(name);
        }
        let mut children: Vec<(&'a str, usize)> = trie.nodes[n]
            .children
            .iter()
            .map(|(l, &c)| (&**l, c as usize))
            .collect();
        // The same answer on every run, whatever the hash order.
        children.sort_unstable();
        for (l, c) in children {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return None;
            }
            self.path.push(l);
            let found = if trie.nodes[c].rule {
                Some(self.name())
            } else {
                self.below_node(c)
            };
            self.path.pop();
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn name(&self) -> String {
        let mut labels: Vec<&str> = self.path.clone();
        labels.reverse();
        labels.join(".")
    }
}

/// A public suffix among the names a normalised pattern matches: for a leading `*.`, strictly
/// below the rest; otherwise the names themselves, each `*` standing for one label.
pub(crate) fn covered_suffix(pattern: &str) -> Option<String> {
    let (below, rest) = match pattern.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    Search {
        trie: trie(),
        labels: rest.rsplit('.').collect(),
        below,
        visits: 0,
        path: Vec::new(),
    }
    .run()
}

/// For a pattern with single-label `*`s: a `*` that, with the labels right of it, can spell a
/// public suffix, so that the labels left of it fall to whoever registers under that suffix.
/// Returns the label the `*` can stand for and the suffix it then forms.
pub(crate) fn wildcard_forming_suffix(pattern: &str) -> Option<(String, String)> {
    let rest = pattern.strip_prefix("*.").unwrap_or(pattern);
    let labels: Vec<&str> = rest.rsplit('.').collect();
    for (k, _) in labels.iter().enumerate().filter(|(_, l)| **l == "*") {
        let search = Search {
            trie: trie(),
            labels: labels[..=k].to_vec(),
            below: false,
            visits: 0,
            path: Vec::new(),
        };
        if let Some(suffix) = search.run() {
            let label = suffix.split('.').next().unwrap_or("*").to_owned();
            return Some((label, suffix));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_read() {
        let t = trie();
        assert!(t.nodes.len() > 10_000, "{}", t.nodes.len());
    }

    #[test]
    fn suffixes_below_a_pattern_are_found() {
        // Private section: S3, EC2, Heroku.
        let found = covered_suffix("*.amazonaws.com").expect("amazonaws.com has suffixes below");
        assert!(found.ends_with(".amazonaws.com"), "{found}");
        assert_eq!(
            covered_suffix("*.s3.amazonaws.com").as_deref(),
            None,
            "s3.amazonaws.com itself is refused elsewhere; nothing is listed below it"
        );
        // ICANN section: `*.uk` covers `co.uk`; a wildcard rule counts.
        assert!(covered_suffix("*.uk").is_some());
        assert_eq!(
            covered_suffix("bedrock-runtime.*.amazonaws.com").as_deref(),
            Some("bedrock-runtime.compute.amazonaws.com")
        );
        // Names that are no suffix.
        for p in [
            "*.openai.com",
            "api.openai.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "*.example.co.uk",
            "*.openai.azure.com",
            "api.*.example.com",
        ] {
            assert_eq!(covered_suffix(p), None, "{p}");
        }
    }

    #[test]
    fn wildcards_that_spell_a_suffix_are_found() {
        let (label, suffix) =
            wildcard_forming_suffix("bedrock-runtime.*.amazonaws.com").expect("found");
        assert_eq!(format!("{label}.amazonaws.com"), suffix);
        assert_eq!(wildcard_forming_suffix("api.*.example.com"), None);
        assert_eq!(wildcard_forming_suffix("*.openai.com"), None);
    }
}
