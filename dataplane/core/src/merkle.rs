//! One Merkle tree per partition, maintained incrementally on every write.
//!
//! A partition's key positions are split into `fanout^depth` leaves by the
//! position bits just below the partition bits. A leaf holds the wrapping sum
//! of the *item hashes* of its keys ([`item_hash`]: key and version digest);
//! an inner node holds the wrapping sum of its children. Sums make the tree
//! independent of the order of updates — two replicas holding the same
//! versions have equal roots however they got there — and let a write update
//! the tree in O(depth) by adding `new − old` along one path, with no rescan.
//!
//! Replicas compare roots, walk down only the children that differ
//! ([`MerkleTree::diff`], or [`MerkleTree::children`] one level at a time
//! across the network), and exchange the keys in the differing leaves'
//! position ranges ([`MerkleTree::leaf_range`]).

use crate::hash::digest_bytes;

/// Shape of the trees of a cluster. Both sides of a comparison must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerkleShape {
    /// log2 of the fanout. Default 4 (16 children).
    pub fanout_bits: u8,
    /// Levels below the root. Default 2 (256 leaves per partition).
    pub depth: u8,
}

impl Default for MerkleShape {
    fn default() -> Self {
        MerkleShape {
            fanout_bits: 4,
            depth: 2,
        }
    }
}

impl MerkleShape {
    /// Bits of the position that pick the leaf.
    pub fn leaf_bits(self) -> u32 {
        u32::from(self.fanout_bits) * u32::from(self.depth)
    }

    /// Number of leaves.
    pub fn leaves(self) -> usize {
        1usize << self.leaf_bits()
    }
}

/// The hash of one key at one version.
pub fn item_hash(table: &str, key: &[u8], object_digest: u64) -> u64 {
    let mut buf = Vec::with_capacity(table.len() + key.len() + 12);
    buf.extend_from_slice(&(table.len() as u32).to_le_bytes());
    buf.extend_from_slice(table.as_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(&object_digest.to_le_bytes());
    digest_bytes(&buf)
}

/// The key positions that fall in `leaf` of `partition` for trees of
/// `shape` over `2^partition_bits` partitions, as an inclusive range.
pub fn leaf_range(
    shape: MerkleShape,
    partition_bits: u8,
    partition: u32,
    leaf: usize,
) -> (u64, u64) {
    let pb = u32::from(partition_bits);
    let lb = shape.leaf_bits();
    let base = u64::from(partition).checked_shl(64 - pb).unwrap_or(0);
    let span_bits = 64 - pb - lb;
    let start = base | (leaf as u64).checked_shl(span_bits).unwrap_or(0);
    let end = start | 1u64.checked_shl(span_bits).map_or(u64::MAX, |s| s - 1);
    (start, end)
}

/// A range of leaves, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafRange {
    /// First differing leaf.
    pub first: usize,
    /// Last differing leaf of the run.
    pub last: usize,
}

/// The Merkle tree of one partition on one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    shape: MerkleShape,
    partition_bits: u8,
    /// `levels[0]` is the root, `levels[depth]` the leaves.
    levels: Vec<Vec<u64>>,
}

impl MerkleTree {
    /// An empty tree for a ring with `partition_bits`.
    pub fn new(shape: MerkleShape, partition_bits: u8) -> Self {
        let levels = (0..=shape.depth)
            .map(|l| vec![0u64; 1usize << (u32::from(shape.fanout_bits) * u32::from(l))])
            .collect();
        MerkleTree {
            shape,
            partition_bits,
            levels,
        }
    }

    /// The tree's shape.
    pub fn shape(&self) -> MerkleShape {
        self.shape
    }

    /// The leaf that holds a key position.
    pub fn leaf_of(&self, position: u64) -> usize {
        let below = position
            .checked_shl(u32::from(self.partition_bits))
            .unwrap_or(0);
        (below.checked_shr(64 - self.shape.leaf_bits()).unwrap_or(0)) as usize
    }

    /// Replaces a key's item hash: `old` is its previous item hash (`None`
    /// if the key was absent), `new` its new one (`None` if removed).
    pub fn update(&mut self, position: u64, old: Option<u64>, new: Option<u64>) {
        let delta = new.unwrap_or(0).wrapping_sub(old.unwrap_or(0));
        self.add_to_leaf(self.leaf_of(position), delta);
    }

    /// Sets a leaf's hash outright (recomputed from the stored items, when
    /// an item's old hash is unknown because its record was damaged), and
    /// its ancestors with it.
    pub fn set_leaf(&mut self, leaf: usize, hash: u64) {
        if let Some(current) = self.leaves().get(leaf).copied() {
            self.add_to_leaf(leaf, hash.wrapping_sub(current));
        }
    }

    fn add_to_leaf(&mut self, leaf: usize, delta: u64) {
        if delta == 0 {
            return;
        }
        let depth = u32::from(self.shape.depth);
        for (l, level) in self.levels.iter_mut().enumerate() {
            let shift = u32::from(self.shape.fanout_bits) * (depth - l as u32);
            if let Some(node) = level.get_mut(leaf >> shift) {
                *node = node.wrapping_add(delta);
            }
        }
    }

    /// The root hash; equal data gives equal roots.
    pub fn root(&self) -> u64 {
        self.levels
            .first()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(0)
    }

    /// The hashes of the children of node `index` at `level`, or `None`
    /// when there is no such inner node.
    pub fn children(&self, level: usize, index: usize) -> Option<&[u64]> {
        let fanout = 1usize << self.shape.fanout_bits;
        let start = index.checked_mul(fanout)?;
        self.levels.get(level + 1)?.get(start..start + fanout)
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[u64] {
        self.levels.last().map_or(&[], Vec::as_slice)
    }

    /// Leaves that differ from `other`, found by walking down from the root
    /// into differing children only. Runs of adjacent leaves are joined.
    pub fn diff(&self, other: &MerkleTree) -> Vec<LeafRange> {
        if self.shape != other.shape || self.root() == other.root() {
            return if self.shape == other.shape {
                Vec::new()
            } else {
                vec![LeafRange {
                    first: 0,
                    last: self.shape.leaves() - 1,
                }]
            };
        }
        let fanout = 1usize << self.shape.fanout_bits;
        let mut frontier = vec![0usize];
        for level in 0..usize::from(self.shape.depth) {
            let mut next = Vec::new();
            for &i in &frontier {
                let (Some(a), Some(b)) = (self.children(level, i), other.children(level, i)) else {
                    continue;
                };
                next.extend(
                    (0..fanout)
                        .filter(|&c| a.get(c) != b.get(c))
                        .map(|c| i * fanout + c),
                );
            }
            frontier = next;
        }
        let mut ranges: Vec<LeafRange> = Vec::new();
        for leaf in frontier {
            match ranges.last_mut() {
                Some(r) if r.last + 1 == leaf => r.last = leaf,
                _ => ranges.push(LeafRange {
                    first: leaf,
                    last: leaf,
                }),
            }
        }
        ranges
    }

    /// The key positions that fall in `leaf` of partition `partition`, as an
    /// inclusive range.
    pub fn leaf_range(&self, partition: u32, leaf: usize) -> (u64, u64) {
        leaf_range(self.shape, self.partition_bits, partition, leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::key_position;

    const PB: u8 = 4;

    /// Keys of partition 0 with a digest each.
    fn items(n: usize) -> Vec<(u64, u64)> {
        (0..)
            .map(|i| (key_position("t", format!("k{i}").as_bytes()), i as u64))
            .filter(|(pos, _)| pos >> (64 - PB) == 0)
            .take(n)
            .map(|(pos, d)| (pos, item_hash("t", &pos.to_le_bytes(), d)))
            .collect()
    }

    fn tree_of(items: &[(u64, u64)]) -> MerkleTree {
        let mut t = MerkleTree::new(MerkleShape::default(), PB);
        for &(pos, h) in items {
            t.update(pos, None, Some(h));
        }
        t
    }

    #[test]
    fn equal_data_gives_equal_roots_in_any_order() {
        let xs = items(300);
        let mut reversed = xs.clone();
        reversed.reverse();
        let (a, b) = (tree_of(&xs), tree_of(&reversed));
        assert_eq!(a.root(), b.root());
        assert_eq!(a, b);
        assert!(a.diff(&b).is_empty());
        assert_ne!(a.root(), MerkleTree::new(MerkleShape::default(), PB).root());
    }

    #[test]
    fn one_changed_key_is_found_in_its_leaf() {
        let xs = items(300);
        let a = tree_of(&xs);
        let mut b = a.clone();
        let (pos, old) = xs[123];
        b.update(pos, Some(old), Some(old ^ 0xdead_beef));
        let diff = a.diff(&b);
        let leaf = a.leaf_of(pos);
        assert_eq!(
            diff,
            vec![LeafRange {
                first: leaf,
                last: leaf
            }]
        );
        let (start, end) = a.leaf_range(0, leaf);
        assert!((start..=end).contains(&pos));
        // Exactly the changed leaf's hash differs.
        let differing = a
            .leaves()
            .iter()
            .zip(b.leaves())
            .filter(|(x, y)| x != y)
            .count();
        assert_eq!(differing, 1);
    }

    #[test]
    fn removing_a_key_restores_the_previous_root() {
        let xs = items(50);
        let mut t = tree_of(&xs[..49]);
        let before = t.root();
        t.update(xs[49].0, None, Some(xs[49].1));
        assert_ne!(t.root(), before);
        t.update(xs[49].0, Some(xs[49].1), None);
        assert_eq!(t.root(), before);
    }

    #[test]
    fn a_leaf_recomputed_without_a_key_equals_the_tree_without_it() {
        let xs = items(300);
        let mut t = tree_of(&xs);
        let (gone, _) = xs[77];
        let leaf = t.leaf_of(gone);
        let without: Vec<_> = xs.iter().copied().filter(|&(p, _)| p != gone).collect();
        let sum = without
            .iter()
            .filter(|&&(p, _)| t.leaf_of(p) == leaf)
            .fold(0u64, |acc, &(_, h)| acc.wrapping_add(h));
        t.set_leaf(leaf, sum);
        assert_eq!(t, tree_of(&without));
        t.set_leaf(usize::MAX, 1);
        assert_eq!(t, tree_of(&without), "an unknown leaf changes nothing");
    }

    #[test]
    fn a_missing_replica_differs_everywhere_it_has_keys() {
        let xs = items(2000);
        let full = tree_of(&xs);
        let empty = MerkleTree::new(MerkleShape::default(), PB);
        let leaves: usize = full.diff(&empty).iter().map(|r| r.last - r.first + 1).sum();
        let non_empty = full.leaves().iter().filter(|&&h| h != 0).count();
        assert_eq!(leaves, non_empty);
    }

    #[test]
    fn leaf_ranges_tile_the_partition() {
        let t = MerkleTree::new(MerkleShape::default(), PB);
        let p = 5u32;
        let (first, _) = t.leaf_range(p, 0);
        let (_, last) = t.leaf_range(p, t.shape().leaves() - 1);
        assert_eq!(first, u64::from(p) << (64 - PB));
        assert_eq!(last, (u64::from(p + 1) << (64 - PB)) - 1);
        for leaf in 1..t.shape().leaves() {
            assert_eq!(t.leaf_range(p, leaf - 1).1 + 1, t.leaf_range(p, leaf).0);
        }
    }
}
