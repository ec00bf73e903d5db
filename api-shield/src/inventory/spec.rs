//! Paths an OpenAPI document declares (`/users/{id}`): a request matching one gets that
//! template verbatim, whatever learning would have made of it, so the inventory speaks the
//! contract's names and never splits or merges what the contract defines.

use std::sync::Arc;

use super::path::segments;

/// Why a spec path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecPathError {
    #[error("spec path `{0}` does not start with `/`")]
    NotAbsolute(String),
    #[error("spec path `{path}` has {found} segments; at most {max} are templated")]
    TooManySegments {
        path: String,
        found: usize,
        max: usize,
    },
}

/// A trie of spec templates. Literal children are sorted for a binary search (no hashing on
/// the hot path); a parameter child matches any non-empty segment.
#[derive(Clone, Debug, Default)]
pub struct SpecPaths {
    root: Node,
    len: usize,
}

#[derive(Clone, Debug, Default)]
struct Node {
    literals: Vec<(Box<str>, Node)>,
    param: Option<Box<Node>>,
    template: Option<Arc<str>>,
}

/// A spec segment is a parameter if it holds a `{`: `{id}` and also `{name}.json`, which
/// this matcher approximates as a whole-segment parameter.
fn is_param(segment: &str) -> bool {
    segment.contains('{')
}

impl SpecPaths {
    /// Adds `template`. A template added twice is kept once.
    pub fn insert(&mut self, template: &str, max_segments: usize) -> Result<(), SpecPathError> {
        if !template.starts_with('/') {
            return Err(SpecPathError::NotAbsolute(template.to_owned()));
        }
        let found = segments(template).count();
        if found > max_segments {
            return Err(SpecPathError::TooManySegments {
                path: template.to_owned(),
                found,
                max: max_segments,
            });
        }
        let mut node = &mut self.root;
        for segment in segments(template) {
            node = if is_param(segment) {
                node.param.get_or_insert_with(Box::default)
            } else {
                let at = match node.literals.binary_search_by(|(k, _)| (**k).cmp(segment)) {
                    Ok(at) => at,
                    Err(at) => {
                        node.literals.insert(at, (segment.into(), Node::default()));
                        at
                    }
                };
                &mut node.literals[at].1
            };
        }
        if node.template.is_none() {
            node.template = Some(template.into());
            self.len += 1;
        }
        Ok(())
    }

    /// How many templates are known.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The template `path` matches; a literal segment wins over a parameter at each position
    /// (`/users/me` before `/users/{id}`), backtracking when the literal branch dead-ends.
    pub fn matches(&self, path: &str) -> Option<&Arc<str>> {
        if self.len == 0 {
            return None;
        }
        let rest = path.strip_prefix('/')?;
        walk(&self.root, if rest.is_empty() { None } else { Some(rest) })
    }
}

/// Matches `rest` (segments still to match, `None` at the end of the path) below `node`.
/// Recursion depth is the number of segments of the longest spec path, which `insert` bounds.
fn walk<'a>(node: &'a Node, rest: Option<&str>) -> Option<&'a Arc<str>> {
    let Some(rest) = rest else {
        return node.template.as_ref();
    };
    let (segment, tail) = match rest.split_once('/') {
        Some((segment, tail)) => (segment, Some(tail)),
        None => (rest, None),
    };
    if let Ok(at) = node.literals.binary_search_by(|(k, _)| (**k).cmp(segment))
        && let Some(found) = walk(&node.literals[at].1, tail)
    {
        return Some(found);
    }
    match &node.param {
        Some(param) if !segment.is_empty() => walk(param, tail),
        _ => None,
    }
}
