//! The name matcher: a trie over labels read right to left (`com` -> `openai` -> `api`).
//!
//! All edges live in one hash table keyed by (parent node, label); a single-label `*` is a
//! separate edge stored in the node. A node carries two optional name classes: `exact` for
//! patterns that end there (`api.openai.com`), `below` for `*.` patterns covering every name
//! strictly below it (`*.openai.com` at the node of `openai.com`).
//!
//! A walk visits a node at most once (a node sits at one depth and is reached by one sequence
//! of literal / `*` choices), so it is bounded by the size of the trie and by the number of
//! labels of the name; it allocates nothing.

use hashbrown::HashTable;

use crate::model::Policy;

const NONE: u32 = u32::MAX;
/// Names longer than this cannot match any pattern (patterns are valid names).
const MAX_LABELS: usize = 128;

/// Labels up to this length live inside the node (one cache miss per step of a walk); longer
/// ones in the trie's label arena.
const INLINE_LABEL: usize = 22;

#[derive(Debug, Clone)]
struct Node {
    parent: u32,
    star: u32,
    exact: u32,
    below: u32,
    label_len: u8,
    /// The label bytes, or (when longer than [`INLINE_LABEL`]) the arena offset in the first
    /// four bytes.
    label: [u8; INLINE_LABEL + 1],
}

/// The compiled name matcher.
#[derive(Debug, Clone)]
pub(crate) struct NameTrie {
    nodes: Vec<Node>,
    labels: String,
    edges: HashTable<u32>,
}

/// A fast 64-bit hash of (parent, label). The table's contents come from the policy; names from
/// the wire only look up, so collisions cannot be forced to grow anything.
fn edge_hash(parent: u32, label: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = u64::from(parent).wrapping_mul(K) ^ (label.len() as u64);
    let mut chunks = label.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h = (h.rotate_left(26) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(26) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // Final avalanche (murmur3 fmix64) so that both the bucket bits and the tag bits vary.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl NameTrie {
    /// Builds the trie of every pattern of every WebGroup; `intern` maps a sorted set of
    /// WebGroup indices to a name class id.
    pub(crate) fn build(policy: &Policy, intern: &mut impl FnMut(&[u32]) -> u32) -> NameTrie {
        let mut trie = NameTrie {
            nodes: vec![Node {
                parent: NONE,
                star: NONE,
                exact: NONE,
                below: NONE,
                label_len: 0,
                label: [0; INLINE_LABEL + 1],
            }],
            labels: String::new(),
            edges: HashTable::with_capacity(policy.pattern_count()),
        };
        // (node, is_below) -> webgroups, collected first and interned once.
        let mut exact_sets: Vec<Vec<u32>> = Vec::new();
        let mut below_sets: Vec<Vec<u32>> = Vec::new();
        let mut exact_of: Vec<u32> = vec![NONE];
        let mut below_of: Vec<u32> = vec![NONE];
        for (g, group) in policy.webgroups.iter().enumerate() {
            for pattern in &group.patterns {
                let mut node = 0u32;
                for label in pattern.fixed_labels().rev() {
                    node = trie.child_or_insert(node, label);
                }
                exact_of.resize(trie.nodes.len(), NONE);
                below_of.resize(trie.nodes.len(), NONE);
                let (slot, sets) = if pattern.is_any_depth() {
                    (&mut below_of[node as usize], &mut below_sets)
                } else {
                    (&mut exact_of[node as usize], &mut exact_sets)
                };
                if *slot == NONE {
                    *slot = sets.len() as u32;
                    sets.push(Vec::new());
                }
                let set = &mut sets[*slot as usize];
                if set.last() != Some(&(g as u32)) {
                    set.push(g as u32);
                }
            }
        }
        exact_of.resize(trie.nodes.len(), NONE);
        below_of.resize(trie.nodes.len(), NONE);
        for (i, node) in trie.nodes.iter_mut().enumerate() {
            if let Some(set) = exact_sets.get_mut(exact_of[i] as usize) {
                set.sort_unstable();
                set.dedup();
                node.exact = intern(set);
            }
            if let Some(set) = below_sets.get_mut(below_of[i] as usize) {
                set.sort_unstable();
                set.dedup();
                node.below = intern(set);
            }
        }
        trie.labels.shrink_to_fit();
        trie.nodes.shrink_to_fit();
        trie.edges.shrink_to_fit(|&c| {
            let n = &trie.nodes[c as usize];
            edge_hash(n.parent, label_of(&trie.labels, n))
        });
        trie
    }

    fn child_or_insert(&mut self, parent: u32, label: &str) -> u32 {
        if label == "*" {
            let star = self.nodes[parent as usize].star;
            if star != NONE {
                return star;
            }
            let id = self.push_node(parent, "");
            self.nodes[parent as usize].star = id;
            return id;
        }
        if let Some(c) = self.child(parent, label) {
            return c;
        }
        let id = self.push_node(parent, label);
        let hash = edge_hash(parent, label.as_bytes());
        let nodes = &self.nodes;
        let labels = &self.labels;
        self.edges.insert_unique(hash, id, |&c| {
            let n = &nodes[c as usize];
            edge_hash(n.parent, label_of(labels, n))
        });
        id
    }

    fn push_node(&mut self, parent: u32, label: &str) -> u32 {
        let id = self.nodes.len() as u32;
        let bytes = label.as_bytes();
        let mut inline = [0u8; INLINE_LABEL + 1];
        if bytes.len() <= INLINE_LABEL {
            inline[..bytes.len()].copy_from_slice(bytes);
        } else {
            let offset = self.labels.len() as u32;
            inline[..4].copy_from_slice(&offset.to_le_bytes());
            self.labels.push_str(label);
        }
        self.nodes.push(Node {
            parent,
            star: NONE,
            exact: NONE,
            below: NONE,
            // Labels are at most 63 bytes (patterns are valid names).
            label_len: u8::try_from(bytes.len()).unwrap_or(u8::MAX),
            label: inline,
        });
        id
    }

    #[inline]
    fn child(&self, parent: u32, label: &str) -> Option<u32> {
        let hash = edge_hash(parent, label.as_bytes());
        self.edges
            .find(hash, |&c| {
                let n = &self.nodes[c as usize];
                n.parent == parent && label_of(&self.labels, n) == label.as_bytes()
            })
            .copied()
    }

    /// Calls `found` with the name class of every pattern node the name reaches. A name that is
    /// not normalised (upper case, empty labels, characters outside `a-z0-9-_`, a trailing dot)
    /// reaches nothing.
    pub(crate) fn walk(&self, name: &str, mut found: impl FnMut(u32)) {
        if self.nodes.len() <= 1 || name.is_empty() || name.len() > 253 {
            return;
        }
        let mut bounds = [(0u16, 0u16); MAX_LABELS];
        let mut n = 0;
        let mut start = 0usize;
        for (i, b) in name.bytes().enumerate() {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
                b'.' => {
                    if n == MAX_LABELS || i == start {
                        return;
                    }
                    bounds[n] = (start as u16, i as u16);
                    n += 1;
                    start = i + 1;
                }
                // Not a normalised name: it matches no pattern.
                _ => return,
            }
        }
        if n == MAX_LABELS || start == name.len() {
            return;
        }
        bounds[n] = (start as u16, name.len() as u16);
        n += 1;
        // Labels right to left.
        bounds[..n].reverse();
        self.walk_from(0, 0, name, &bounds[..n], &mut found);
    }

    fn walk_from(
        &self,
        node: u32,
        depth: usize,
        name: &str,
        labels: &[(u16, u16)],
        found: &mut impl FnMut(u32),
    ) {
        let n = &self.nodes[node as usize];
        if depth == labels.len() {
            if n.exact != NONE {
                found(n.exact);
            }
            return;
        }
        if n.below != NONE {
            found(n.below);
        }
        let (s, e) = labels[depth];
        let label = name.get(s as usize..e as usize).unwrap_or("");
        if let Some(c) = self.child(node, label) {
            self.walk_from(c, depth + 1, name, labels, found);
        }
        if n.star != NONE && !label.is_empty() {
            self.walk_from(n.star, depth + 1, name, labels, found);
        }
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.labels.capacity()
            + self.edges.allocation_size()
    }
}

fn label_of<'a>(labels: &'a str, n: &'a Node) -> &'a [u8] {
    let len = usize::from(n.label_len);
    if len <= INLINE_LABEL {
        &n.label[..len]
    } else {
        let mut offset = [0u8; 4];
        offset.copy_from_slice(&n.label[..4]);
        let start = u32::from_le_bytes(offset) as usize;
        labels.as_bytes().get(start..start + len).unwrap_or(&[])
    }
}
