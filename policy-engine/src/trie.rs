//! The name matcher: a trie over labels read right to left (`com` -> `openai` -> `api`).
//!
//! The trie's nodes *are* the slots of one open-addressing hash table keyed by (parent node,
//! label): looking up the child of a node for a label lands, in the common case, on the very slot
//! that holds the child with everything a walk needs next (a filter of its children, whether it
//! has a `*` child, its name classes, its label for verification). Slots are 32 bytes, aligned so
//! that none straddles two cache lines: a walk touches one cache line per label, and none for a
//! label the filter of its parent rules out. Labels of up to 15 bytes are stored in the slot,
//! longer ones in an arena.
//!
//! Where a child is placed is chosen by its *path hash*, a hash of the labels from the root down
//! to it, not by its parent's slot number: the slot of every label of a name can be computed
//! from the name alone, which lets the processor start the next lookup before the current one
//! has finished. The child is then recognised by its parent's slot number and its label.
//!
//! A single-label `*` is an edge with the label `*` (no name label can be `*`); the parent has a
//! flag saying it has one. A node carries two optional name classes: `exact` for patterns that
//! end there (`api.openai.com`), `below` for `*.` patterns covering every name strictly below it
//! (`*.openai.com` at the node of `openai.com`).
//!
//! A walk visits a node at most once (a node sits at one depth and is reached by one sequence of
//! literal / `*` choices), so it is bounded by the size of the trie and by the number of labels
//! of the name; it allocates nothing.

use foldhash::{HashMap, HashSet};

use crate::model::Policy;

const NONE: u32 = u32::MAX;
/// Parent id of the root's children (the root is not stored in the table).
const ROOT: u32 = u32::MAX - 1;
/// Path hash of the root.
const ROOT_HASH: u64 = 0;
/// The bit of [`Node::label_len`] that says the node has a `*` child.
const HAS_STAR: u8 = 0x80;
/// Names longer than this cannot match any pattern (patterns are valid names).
const MAX_NAME: usize = 253;
/// Labels up to this length live inside the slot.
const INLINE_LABEL: usize = 15;

/// A slot of the table: 32 bytes, aligned to 32.
#[derive(Debug, Clone)]
#[repr(align(32))]
struct Node {
    /// Parent node id; `NONE` marks an empty slot.
    parent: u32,
    /// A one-word Bloom filter of the literal children: bit [`filter_bit`] of each child's path
    /// hash. A walk looks a label up only when its bit is set, so a name that goes further than
    /// the patterns (`x.api.openai.com` under `*.api.openai.com`) costs no read of the table for
    /// the label that is not there.
    children: u32,
    exact: u32,
    below: u32,
    /// The label length (at most 63), and [`HAS_STAR`].
    label_len: u8,
    /// The label bytes, or (when longer than [`INLINE_LABEL`]) the arena offset in the first
    /// four bytes.
    label: [u8; INLINE_LABEL],
}

const EMPTY: Node = Node {
    parent: NONE,
    children: 0,
    exact: NONE,
    below: NONE,
    label_len: 0,
    label: [0; INLINE_LABEL],
};

/// The compiled name matcher.
#[derive(Debug, Clone)]
pub(crate) struct NameTrie {
    root: Node,
    slots: Vec<Node>,
    mask: usize,
    long_labels: String,
    nodes: usize,
}

/// A fast 64-bit hash of (parent, label), where the parent is named by its own path hash and the
/// label is `buf[start..end]` (1 byte or more). A node's slot is found from its path hash, which
/// depends only on the labels from the root to it: the walk can compute where every label of a
/// name will be looked up before it has read a single slot.
/// The table's contents come from the policy; names from the wire only look up, and a probe
/// sequence ends at the first empty slot of a table at most 3/4 full, so collisions cannot be
/// forced to grow anything. A hash only chooses where to look: a child is recognised by its
/// parent's slot number and its label, never by its hash.
///
/// The label is read in little-endian 8-byte words, the last one zero-padded. When at least 8
/// bytes of `buf` end where the label ends, that last word is loaded in one read from `buf` and
/// shifted (the bytes before the label drop out), which is what makes hashing a label of a name
/// cheap; the result depends only on the label's bytes.
#[inline]
fn edge_hash(parent: u64, buf: &[u8], start: usize, end: usize) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let len = end - start;
    let mut h = parent.wrapping_mul(K) ^ (len as u64);
    let full = start + len / 8 * 8;
    let mut i = start;
    while i < full {
        h = (h.rotate_left(26) ^ word(&buf[i..i + 8])).wrapping_mul(K);
        i += 8;
    }
    let rest = end - full;
    if rest > 0 {
        let w = if end >= 8 {
            word(&buf[end - 8..end]) >> (8 * (8 - rest))
        } else {
            buf[full..end]
                .iter()
                .rev()
                .fold(0u64, |w, &b| (w << 8) | u64::from(b))
        };
        h = (h.rotate_left(26) ^ w).wrapping_mul(K);
    }
    // Final avalanche (murmur3 fmix64) so that the bucket bits vary.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The bit a child with this path hash sets in its parent's [`Node::children`] filter: the top
/// five bits of the hash, which the slot index (the low bits) does not use.
#[inline]
fn filter_bit(hash: u64) -> u32 {
    1 << (hash >> 59)
}

/// The little-endian word of an 8-byte slice.
#[inline]
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

/// Whether a name has the shape of a normalised one as far as the walk cares: 1 to 253 bytes of
/// `a-z0-9-_` in non-empty labels separated by single dots.
fn walkable(name: &[u8]) -> bool {
    match name {
        [] | [b'.', ..] | [.., b'.'] => false,
        _ if name.len() > MAX_NAME => false,
        _ => {
            let shape = crate::name::scan_shape(name);
            !shape.invalid && !shape.empty_label
        }
    }
}

/// The lazy validity check of a walk.
struct Check<'a> {
    name: &'a [u8],
    checked: bool,
}

impl Check<'_> {
    /// Whether the name is walkable, computed once.
    fn valid(&mut self) -> bool {
        if !self.checked {
            if !walkable(self.name) {
                return false;
            }
            self.checked = true;
        }
        true
    }
}

impl NameTrie {
    /// Builds the trie of every pattern of every WebGroup; `intern` maps a sorted set of
    /// WebGroup indices to a name class id.
    pub(crate) fn build(policy: &Policy, intern: &mut impl FnMut(&[u32]) -> u32) -> NameTrie {
        // A node is a distinct suffix of a pattern (after a leading `*.`): count them (by hash;
        // a collision only makes the estimate smaller) and size the table for a load of 1/3 to
        // 2/3. Should the table still fill beyond 3/4, it is rebuilt twice as large.
        let mut suffixes: HashSet<u64> = HashSet::default();
        for pattern in policy.webgroups.iter().flat_map(|g| g.patterns.iter()) {
            let text = pattern.as_str();
            let fixed = text.strip_prefix("*.").unwrap_or(text);
            let bytes = fixed.as_bytes();
            suffixes.insert(edge_hash(0, bytes, 0, bytes.len()));
            for (i, _) in fixed.match_indices('.') {
                suffixes.insert(edge_hash(0, bytes, i + 1, bytes.len()));
            }
        }
        let mut size = (suffixes.len() + suffixes.len() / 2 + 16).next_power_of_two();
        drop(suffixes);
        loop {
            if let Some(trie) = Self::build_sized(policy, size, intern) {
                return trie;
            }
            size *= 2;
        }
    }

    fn build_sized(
        policy: &Policy,
        size: usize,
        intern: &mut impl FnMut(&[u32]) -> u32,
    ) -> Option<NameTrie> {
        let empty = policy.webgroups.iter().all(|g| g.patterns.is_empty());
        let mut trie = NameTrie {
            root: EMPTY,
            slots: vec![EMPTY; if empty { 0 } else { size }],
            mask: size - 1,
            long_labels: String::new(),
            nodes: 1,
        };
        if empty {
            return Some(trie);
        }
        let mut exact_sets: HashMap<u32, Vec<u32>> = HashMap::default();
        let mut below_sets: HashMap<u32, Vec<u32>> = HashMap::default();
        for (g, group) in policy.webgroups.iter().enumerate() {
            for pattern in &group.patterns {
                let (mut node, mut hash) = (ROOT, ROOT_HASH);
                for label in pattern.fixed_labels().rev() {
                    if trie.nodes * 4 > size * 3 {
                        return None;
                    }
                    (node, hash) = trie.child_or_insert(node, hash, label);
                }
                let sets = if pattern.is_any_depth() {
                    &mut below_sets
                } else {
                    &mut exact_sets
                };
                sets.entry(node).or_default().push(g as u32);
            }
        }
        for (sets, below) in [(exact_sets, false), (below_sets, true)] {
            for (node, mut set) in sets {
                set.sort_unstable();
                set.dedup();
                let class = intern(&set);
                let n = trie.node_mut(node);
                if below {
                    n.below = class;
                } else {
                    n.exact = class;
                }
            }
        }
        trie.long_labels.shrink_to_fit();
        Some(trie)
    }

    fn node(&self, id: u32) -> &Node {
        if id == ROOT {
            &self.root
        } else {
            &self.slots[id as usize]
        }
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        if id == ROOT {
            &mut self.root
        } else {
            &mut self.slots[id as usize]
        }
    }

    /// The child of `parent` (whose path hash is `parent_hash`) for `label`, inserted if new,
    /// and its path hash.
    fn child_or_insert(&mut self, parent: u32, parent_hash: u64, label: &str) -> (u32, u64) {
        let bytes = label.as_bytes();
        let hash = edge_hash(parent_hash, bytes, 0, bytes.len());
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.parent == NONE {
                break;
            }
            if slot.parent == parent && label_of(&self.long_labels, slot) == bytes {
                return (i as u32, hash);
            }
            i = (i + 1) & self.mask;
        }
        let mut inline = [0u8; INLINE_LABEL];
        if bytes.len() <= INLINE_LABEL {
            inline[..bytes.len()].copy_from_slice(bytes);
        } else {
            let offset = self.long_labels.len() as u32;
            inline[..4].copy_from_slice(&offset.to_le_bytes());
            self.long_labels.push_str(label);
        }
        self.slots[i] = Node {
            parent,
            // Labels are at most 63 bytes (patterns are valid names).
            label_len: u8::try_from(bytes.len()).unwrap_or(u8::MAX),
            label: inline,
            ..EMPTY
        };
        self.nodes += 1;
        let parent = self.node_mut(parent);
        if label == "*" {
            parent.label_len |= HAS_STAR;
        } else {
            parent.children |= filter_bit(hash);
        }
        (i as u32, hash)
    }

    /// The literal child of `parent` (the node `n`) for the label `name[start..end]`, where
    /// `hash` is the child's path hash.
    #[inline]
    fn child(
        &self,
        parent: u32,
        n: &Node,
        hash: u64,
        name: &[u8],
        start: usize,
        end: usize,
    ) -> Option<u32> {
        if n.children & filter_bit(hash) == 0 {
            return None;
        }
        let label = &name[start..end];
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.parent == NONE {
                return None;
            }
            if slot.parent == parent && label_of(&self.long_labels, slot) == label {
                return Some(i as u32);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Calls `found` with the name class of every pattern node the name reaches. A name that is
    /// not normalised (upper case, empty labels, characters outside `a-z0-9-_`, a trailing dot)
    /// reaches nothing.
    ///
    /// The name is checked lazily, the first time the walk is about to report a `below` class or
    /// to follow a `*` edge, and the walk stops there if the check fails. Until then it followed
    /// only literal edges, whose labels are those of valid patterns, and an `exact` class reached
    /// by literal edges alone means the name is a pattern's text: the name is valid whenever
    /// `found` is called. Names that leave the trie early (most names matching no pattern) are
    /// never scanned in full.
    pub(crate) fn walk(&self, name: &str, mut found: impl FnMut(u32)) {
        let name = name.as_bytes();
        if self.slots.is_empty() || name.is_empty() || name.len() > MAX_NAME {
            return;
        }
        let mut check = Check {
            name,
            checked: false,
        };
        self.walk_from(ROOT, ROOT_HASH, name, &mut check, &mut found);
    }

    /// Walks from `node` over the labels of `rest` (the part of the name left of the labels
    /// consumed so far), right to left: the literal child's subtree first, then the `*` child's.
    /// False when the walk must stop because the name is not valid.
    fn walk_from(
        &self,
        mut node: u32,
        mut hash: u64,
        mut rest: &[u8],
        check: &mut Check<'_>,
        found: &mut impl FnMut(u32),
    ) -> bool {
        loop {
            let n = self.node(node);
            if rest.is_empty() {
                if n.exact != NONE {
                    found(n.exact);
                }
                return true;
            }
            if n.below != NONE {
                if !check.valid() {
                    return false;
                }
                found(n.below);
            }
            let end = rest.len();
            let start = rest
                .iter()
                .rposition(|&b| b == b'.')
                .map_or(0, |dot| dot + 1);
            let child_hash = edge_hash(hash, rest, start, end);
            let child = self.child(node, n, child_hash, rest, start, end);
            let star = n.label_len & HAS_STAR != 0;
            if star && !check.valid() {
                return false;
            }
            // An empty label (`start == end`) has no literal child; before a `*` edge is taken the
            // name was checked and has none. `start - 1` is the dot before the label.
            rest = &rest[..start.saturating_sub(1)];
            if let Some(c) = child {
                if !star {
                    (node, hash) = (c, child_hash);
                    continue;
                }
                if !self.walk_from(c, child_hash, rest, check, found) {
                    return false;
                }
            } else if !star {
                return true;
            }
            let star_hash = edge_hash(hash, b"*", 0, 1);
            match self.star_child(node, star_hash) {
                Some(s) => (node, hash) = (s, star_hash),
                None => return true,
            }
        }
    }

    /// The `*` child of `parent`, whose path hash is `hash` (the parent says it has one).
    fn star_child(&self, parent: u32, hash: u64) -> Option<u32> {
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.parent == NONE {
                return None;
            }
            if slot.parent == parent && slot.label_len & !HAS_STAR == 1 && slot.label[0] == b'*' {
                return Some(i as u32);
            }
            i = (i + 1) & self.mask;
        }
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes
    }

    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Node>() + self.long_labels.capacity()
    }
}

// A slot is 32 bytes and aligned to 32, so it never straddles two cache lines.
const _: () = assert!(std::mem::size_of::<Node>() == 32 && std::mem::align_of::<Node>() == 32);

fn label_of<'a>(long_labels: &'a str, n: &'a Node) -> &'a [u8] {
    let len = usize::from(n.label_len & !HAS_STAR);
    if len <= INLINE_LABEL {
        &n.label[..len]
    } else {
        let mut offset = [0u8; 4];
        offset.copy_from_slice(&n.label[..4]);
        let start = u32::from_le_bytes(offset) as usize;
        long_labels
            .as_bytes()
            .get(start..start + len)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WebGroup;
    use crate::name::NamePattern;

    /// A trie of one WebGroup per pattern, and the sorted groups a name reaches.
    fn matcher(patterns: &[&str]) -> impl Fn(&str) -> Vec<u32> {
        let policy = Policy {
            webgroups: patterns
                .iter()
                .enumerate()
                .map(|(i, p)| WebGroup {
                    name: format!("wg-{i}"),
                    patterns: vec![NamePattern::parse(p).expect("valid pattern")],
                    description: None,
                })
                .collect(),
            ..Policy::default()
        };
        let mut sets: Vec<Vec<u32>> = Vec::new();
        let trie = NameTrie::build(&policy, &mut |set: &[u32]| {
            sets.push(set.to_vec());
            (sets.len() - 1) as u32
        });
        move |name: &str| {
            let mut groups = Vec::new();
            trie.walk(name, |class| groups.extend(&sets[class as usize]));
            groups.sort_unstable();
            groups
        }
    }

    #[test]
    fn walks_literal_any_depth_and_single_label_patterns() {
        let reach = matcher(&[
            "api.openai.com",
            "*.openai.com",
            "bedrock-runtime.*.cloud.example",
            "*.a.*.example.org",
            "a-label-longer-than-fifteen-bytes.example.org",
        ]);
        assert_eq!(reach("api.openai.com"), vec![0, 1]);
        assert_eq!(reach("x.api.openai.com"), vec![1]);
        assert_eq!(reach("openai.com"), Vec::<u32>::new());
        assert_eq!(reach("bedrock-runtime.us-east-1.cloud.example"), vec![2]);
        assert_eq!(
            reach("bedrock-runtime.a.b.cloud.example"),
            Vec::<u32>::new()
        );
        assert_eq!(reach("z.y.a.b.example.org"), vec![3]);
        assert_eq!(reach("a.b.example.org"), Vec::<u32>::new());
        assert_eq!(
            reach("a-label-longer-than-fifteen-bytes.example.org"),
            vec![4]
        );
        assert_eq!(reach("API.openai.com"), Vec::<u32>::new());
    }

    #[test]
    fn the_children_filter_only_skips_labels_that_are_absent() {
        // Enough children under one node to set every bit of its filter, and more names whose
        // bits are set but whose labels are not there.
        let patterns: Vec<String> = (0..200).map(|i| format!("h{i}.example.net")).collect();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let reach = matcher(&refs);
        for i in 0..200u32 {
            assert_eq!(reach(&format!("h{i}.example.net")), vec![i]);
        }
        for i in 200..2000 {
            assert!(reach(&format!("h{i}.example.net")).is_empty());
        }
    }
}
