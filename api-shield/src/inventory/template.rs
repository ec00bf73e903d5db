//! Turning a request path into its endpoint template: spec paths first, then the learned
//! tree, then per-segment classification. One pass, one output buffer the caller reuses, no
//! allocation per segment.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::learned::LearnedNode;
use super::path::{segments, without_query};
use super::segment::{Param, classify};
use super::spec::{SpecPathError, SpecPaths};

/// Limits of templating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConfig {
    /// A position under one prefix with more distinct literal values than this becomes a
    /// parameter (`{name}`).
    pub sibling_threshold: usize,
    /// Segments kept; the rest of a longer path becomes `{rest}`.
    pub max_segments: usize,
    /// Longest segment kept as a literal; longer ones become `{segment}`.
    pub max_segment_len: usize,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            sibling_threshold: 10,
            max_segments: 32,
            max_segment_len: 128,
        }
    }
}

/// Where a template came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A registered spec path matched.
    Spec,
    /// Classification and the learned tree made it.
    Learned,
}

/// The templater of one host: its spec paths and what it learned.
#[derive(Clone, Debug, Default)]
pub struct Templater {
    config: TemplateConfig,
    spec: SpecPaths,
    learned: LearnedNode,
}

impl Templater {
    pub fn new(config: TemplateConfig) -> Self {
        Self {
            config,
            spec: SpecPaths::default(),
            learned: LearnedNode::default(),
        }
    }

    pub fn config(&self) -> TemplateConfig {
        self.config
    }

    /// Adds spec templates (`/users/{id}`); requests matching one get it verbatim.
    pub fn register_spec_paths(&mut self, paths: &[&str]) -> Result<(), SpecPathError> {
        for path in paths {
            self.spec.insert(path, self.config.max_segments)?;
        }
        Ok(())
    }

    /// The spec templates known.
    pub fn spec_paths(&self) -> &SpecPaths {
        &self.spec
    }

    /// Writes the template of `path` into `out` (cleared first). Templating a template gives
    /// it back unchanged.
    pub fn template_into(&self, path: &str, out: &mut String) -> Source {
        out.clear();
        let path = without_query(path);
        if let Some(template) = self.spec.matches(path) {
            out.push_str(template);
            return Source::Spec;
        }
        out.push('/');
        let mut node = Some(&self.learned);
        for (i, segment) in segments(path).enumerate() {
            if i > 0 {
                out.push('/');
            }
            if i == self.config.max_segments {
                out.push_str(Param::Rest.placeholder());
                break;
            }
            let key = self.key(segment);
            let (next, collapsed) = node.map_or((None, false), |n| n.step(key));
            out.push_str(if collapsed {
                Param::Name.placeholder()
            } else {
                key
            });
            node = next;
        }
        Source::Learned
    }

    /// The template of `path`, allocated.
    pub fn template(&self, path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        self.template_into(path, &mut out);
        out
    }

    /// The spec template `path` matches, if any.
    pub fn spec_match(&self, path: &str) -> Option<&Arc<str>> {
        self.spec.matches(without_query(path))
    }

    /// Learns `path` (which must not match a spec path: those are never learned). Returns
    /// whether a position collapsed, so templates made before may have changed.
    pub fn learn(&mut self, path: &str) -> bool {
        let path = without_query(path);
        let config = self.config;
        let keys = segments(path)
            .take(config.max_segments)
            .map(|s| key_of(s, config.max_segment_len));
        self.learned.learn(keys, config.sibling_threshold)
    }

    /// The learned tree, to save it.
    pub fn learned(&self) -> &LearnedNode {
        &self.learned
    }

    /// Replaces the learned tree with one read back from disk, after checking it.
    pub fn restore_learned(&mut self, learned: LearnedNode) -> Result<(), String> {
        let c = self.config;
        learned.check(c.sibling_threshold, c.max_segments + 1, c.max_segment_len)?;
        self.learned = learned;
        Ok(())
    }

    /// Nodes in the learned tree, for memory accounting.
    pub fn learned_nodes(&self) -> usize {
        self.learned.nodes()
    }

    fn key<'a>(&self, segment: &'a str) -> &'a str {
        key_of(segment, self.config.max_segment_len)
    }
}

/// The segment a template holds for `segment`: its placeholder or itself.
fn key_of(segment: &str, max_len: usize) -> &str {
    match classify(segment, max_len) {
        Some(param) => param.placeholder(),
        None => segment,
    }
}
