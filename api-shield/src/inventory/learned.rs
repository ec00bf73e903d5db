//! What templating learned from traffic: for each position under a template prefix, the
//! distinct values seen there. A position whose values outgrow the sibling threshold is a
//! parameter (`{name}`): its children are merged into one and later values all go there.
//!
//! Bounded by construction: a node holds at most `threshold` literal children (one more
//! collapses it), and nodes are only added when the inventory creates an endpoint, which the
//! per-host cap bounds, so the tree has at most `cap × max_segments` nodes.

use serde::{Deserialize, Serialize};

/// One position of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedNode {
    /// Distinct values seen at the next position, while it is not collapsed. A linear scan:
    /// there are at most `threshold` of them, and no hashing of client-chosen strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) children: Vec<(Box<str>, LearnedNode)>,
    /// Set once the next position collapsed: every value goes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) wild: Option<Box<LearnedNode>>,
}

impl LearnedNode {
    /// Where `key` leads, and whether the position is collapsed.
    pub fn step(&self, key: &str) -> (Option<&Self>, bool) {
        if let Some(wild) = &self.wild {
            return (Some(wild), true);
        }
        let child = self
            .children
            .iter()
            .find(|(k, _)| **k == *key)
            .map(|(_, n)| n);
        (child, false)
    }

    /// Adds the path of `keys` (classified segments), collapsing positions whose siblings
    /// outgrow `threshold`. Returns whether any position collapsed, when the endpoints below
    /// must be re-templated.
    pub fn learn<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, threshold: usize) -> bool {
        let mut collapsed = false;
        let mut node = self;
        for key in keys {
            if node.wild.is_none() && !node.children.iter().any(|(k, _)| **k == *key) {
                node.children.push((key.into(), Self::default()));
                if node.children.len() > threshold {
                    node.collapse(threshold);
                    collapsed = true;
                }
            }
            node = match node.wild {
                Some(ref mut wild) => wild,
                None => {
                    let at = node.children.iter().position(|(k, _)| **k == *key);
                    // The key is there: it was found or pushed above.
                    let at = at.unwrap_or(node.children.len() - 1);
                    &mut node.children[at].1
                }
            };
        }
        collapsed
    }

    /// Turns the next position into a parameter: all children become one. Merging can give a
    /// deeper position more siblings than `threshold`; those collapse too.
    fn collapse(&mut self, threshold: usize) {
        let mut merged = Self::default();
        for (_, child) in std::mem::take(&mut self.children) {
            merged.merge(child);
        }
        merged.enforce(threshold);
        match self.wild.as_deref_mut() {
            Some(wild) => {
                wild.merge(merged);
                wild.enforce(threshold);
            }
            None => self.wild = Some(Box::new(merged)),
        }
    }

    /// Collapses every position below that holds more than `threshold` values.
    fn enforce(&mut self, threshold: usize) {
        if self.children.len() > threshold {
            // `collapse` enforces what it merged; walking it again here would double the
            // work at every level.
            self.collapse(threshold);
            return;
        }
        for (_, child) in &mut self.children {
            child.enforce(threshold);
        }
        if let Some(wild) = self.wild.as_deref_mut() {
            wild.enforce(threshold);
        }
    }

    /// Merges `other` into `self`; a collapsed side makes the result collapsed.
    fn merge(&mut self, other: Self) {
        if let Some(wild) = other.wild {
            self.collapse_into(*wild);
        } else {
            for (key, child) in other.children {
                self.merge_child(key, child);
            }
        }
    }

    /// Merges a collapsed position into this one, which becomes collapsed: its own children
    /// join the wild child (`enforce` restores the threshold afterwards).
    fn collapse_into(&mut self, wild: Self) {
        let mut mine = self.wild.take().map_or_else(Self::default, |w| *w);
        for (_, child) in std::mem::take(&mut self.children) {
            mine.merge(child);
        }
        mine.merge(wild);
        self.wild = Some(Box::new(mine));
    }

    fn merge_child(&mut self, key: Box<str>, child: Self) {
        if let Some(wild) = self.wild.as_deref_mut() {
            wild.merge(child);
        } else if let Some((_, mine)) = self.children.iter_mut().find(|(k, _)| *k == key) {
            mine.merge(child);
        } else {
            self.children.push((key, child));
        }
    }

    /// Nodes in this tree, this one included.
    pub fn nodes(&self) -> usize {
        1 + self.children.iter().map(|(_, c)| c.nodes()).sum::<usize>()
            + self.wild.as_ref().map_or(0, |w| w.nodes())
    }

    /// Checks a tree read back from disk: at most `threshold` children per node, at most
    /// `max_depth` deep, keys no longer than `max_key`.
    pub fn check(&self, threshold: usize, max_depth: usize, max_key: usize) -> Result<(), String> {
        if max_depth == 0 && (self.wild.is_some() || !self.children.is_empty()) {
            return Err("the learned tree is deeper than the segments templated".into());
        }
        if self.children.len() > threshold || (self.wild.is_some() && !self.children.is_empty()) {
            return Err("a learned position holds more values than the sibling threshold".into());
        }
        for (key, child) in &self.children {
            if key.len() > max_key {
                return Err("a learned segment is longer than the segments kept".into());
            }
            child.check(threshold, max_depth - 1, max_key)?;
        }
        match &self.wild {
            Some(wild) => wild.check(threshold, max_depth - 1, max_key),
            None => Ok(()),
        }
    }
}
