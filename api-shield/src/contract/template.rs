//! Path templates (`/users/{id}`) and the lookup of a request path among them.
//!
//! Matching is per segment on the normalised path the gateway made: a `/` inside a parameter
//! cannot exist there (an encoded `%2F` is refused before), so segments line up. When several
//! templates match, the one with literal segments earliest wins, as OpenAPI requires
//! (`/users/me` over `/users/{id}`); segments mixing text and parameters (`/files/{name}.json`)
//! rank between the two.

use super::error::LoadError;

/// One piece of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(String),
}

/// A parsed template: its segments, each a list of pieces.
#[derive(Clone, Debug)]
pub struct Template {
    text: String,
    segments: Vec<Vec<Piece>>,
}

/// Rank of a segment for precedence: higher is more specific.
const RANK_LITERAL: u8 = 2;
const RANK_MIXED: u8 = 1;
const RANK_PARAM: u8 = 0;

impl Template {
    /// Parses `text`, a key of `paths` (`/pets/{id}`); `at` names it in errors.
    pub fn parse(text: &str, at: &str) -> Result<Self, LoadError> {
        let invalid = |message: &str| LoadError::Invalid {
            pointer: at.to_owned(),
            message: message.to_owned(),
        };
        let Some(rest) = text.strip_prefix('/') else {
            return Err(invalid("a path must start with '/'"));
        };
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            segments.push(
                parse_segment(raw).ok_or_else(|| invalid("unbalanced '{' or '}' in the path"))?,
            );
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written in the document.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().flatten().filter_map(|p| match p {
            Piece::Param(name) => Some(name.as_str()),
            Piece::Literal(_) => None,
        })
    }

    /// Number of segments, the first key of the lookup.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Precedence key: segment ranks from the left.
    pub fn ranks(&self) -> Vec<u8> {
        self.segments.iter().map(|s| rank(s)).collect()
    }

    /// The raw (still percent-encoded) parameter values when `segments` match, else `None`.
    pub fn matches<'p>(&self, segments: &[&'p str]) -> Option<Vec<(&str, &'p str)>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pattern, segment) in self.segments.iter().zip(segments) {
            match_segment(pattern, segment, &mut params)?;
        }
        Some(params)
    }
}

fn rank(pieces: &[Piece]) -> u8 {
    match pieces {
        [Piece::Literal(_)] | [] => RANK_LITERAL,
        [Piece::Param(_)] => RANK_PARAM,
        _ => RANK_MIXED,
    }
}

/// `{a}.{b}` as pieces; `None` when braces do not balance.
fn parse_segment(raw: &str) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}')?;
                let name = &rest[1..end];
                if name.is_empty() || name.contains('{') {
                    return None;
                }
                pieces.push(Piece::Param(name.to_owned()));
                rest = &rest[end + 1..];
            }
            Some(start) => {
                if rest[..start].contains('}') {
                    return None;
                }
                pieces.push(Piece::Literal(rest[..start].to_owned()));
                rest = &rest[start..];
            }
            None => {
                if rest.contains('}') {
                    return None;
                }
                pieces.push(Piece::Literal(rest.to_owned()));
                rest = "";
            }
        }
    }
    Some(pieces)
}

/// Matches one segment; a parameter takes the shortest text up to the next literal piece
/// (the whole rest when it is last) and never nothing.
fn match_segment<'t, 'p>(
    pieces: &'t [Piece],
    segment: &'p str,
    params: &mut Vec<(&'t str, &'p str)>,
) -> Option<()> {
    let mut rest = segment;
    let mut index = 0;
    while index < pieces.len() {
        match &pieces[index] {
            Piece::Literal(text) => rest = rest.strip_prefix(text.as_str())?,
            Piece::Param(name) => {
                let value = match pieces.get(index + 1) {
                    Some(Piece::Literal(next)) => {
                        let at = rest.get(1..)?.find(next.as_str())? + 1;
                        let value = &rest[..at];
                        rest = &rest[at..];
                        value
                    }
                    _ => std::mem::take(&mut rest),
                };
                if value.is_empty() {
                    return None;
                }
                params.push((name.as_str(), value));
            }
        }
        index += 1;
    }
    rest.is_empty().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Template {
        Template::parse(text, "/paths").expect("parses")
    }

    #[test]
    fn parameters_take_whole_segments_or_the_text_between_literals() {
        let tpl = t("/files/{name}.{ext}");
        assert_eq!(
            tpl.matches(&["files", "a.b.json"]),
            Some(vec![("name", "a"), ("ext", "b.json")])
        );
        assert_eq!(
            tpl.matches(&["files", ".json"]),
            None,
            "a parameter is never empty"
        );
        assert_eq!(t("/users/{id}").matches(&["users", ""]), None);
        assert_eq!(t("/users/{id}").matches(&["users", "7", "x"]), None);
    }

    #[test]
    fn literal_segments_rank_above_mixed_and_parameters() {
        assert!(t("/users/me").ranks() > t("/users/{id}").ranks());
        assert!(t("/users/{id}.json").ranks() > t("/users/{id}").ranks());
        assert!(
            t("/a/{x}/c").ranks() < t("/a/b/{y}").ranks(),
            "the leftmost literal decides"
        );
    }

    #[test]
    fn unbalanced_braces_are_refused() {
        for bad in ["/a/{b", "/a/b}", "/a/{}", "/a/{{b}}", "no-slash"] {
            assert!(Template::parse(bad, "/paths").is_err(), "{bad}");
        }
    }
}
