//! Splitting a path into segments the same way everywhere: `/` has none, `/a` has `a`,
//! `/a/` has `a` and an empty one, so joining them back with `/` gives the path again.

/// The segments of `path` after its leading `/` (a path without one is read as if it had it).
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut split = rest.split('/');
    if rest.is_empty() {
        // `"".split('/')` yields one empty item; `/` has no segment.
        split.next();
    }
    split
}

/// `path` without a query or fragment, should a front door have left one.
pub fn without_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(at) => &path[..at],
        None => path,
    }
}
