//! Classifying one path segment: is it an identifier (which becomes a parameter of the
//! template) or a literal name? One pass over the bytes, no allocation, no regex: this runs
//! for every segment of every request.

/// The kinds of parameter a template holds, each with its own placeholder name so a reader
/// sees why a segment was collapsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// All digits: `{id}`.
    Id,
    /// A UUID in its 8-4-4-4-12 form: `{uuid}`.
    Uuid,
    /// A ULID (26 Crockford base32 characters): `{ulid}`.
    Ulid,
    /// 16 or more hex digits: `{hex}`.
    Hex,
    /// 16 or more base64url characters that look random: `{token}`.
    Token,
    /// An e-mail address: `{email}`.
    Email,
    /// 8 or more characters with several digits (order numbers, dates, slugs with ids): `{key}`.
    Key,
    /// A position that had too many distinct sibling values: `{name}`.
    Name,
    /// A segment longer than the templater keeps: `{segment}`.
    Segment,
    /// Everything after the last segment the templater keeps: `{rest}`.
    Rest,
}

/// Shortest hex or base64url run taken for an identifier.
const MIN_TOKEN_LEN: usize = 16;
/// Shortest "mixed" segment taken for an identifier.
const MIN_MIXED_LEN: usize = 8;
/// Digits a mixed segment needs: `v1`, `oauth2`, `sha256` stay names, `a1b2c3d4` does not.
const MIN_MIXED_DIGITS: usize = 3;
/// A random base64url string changes character class (lower, upper, digit) at about half
/// its positions; camelCase and kebab-case words rarely do (an upper-case letter followed by
/// lower-case ones is not counted: it starts a word). A token needs at least one change per
/// this many characters.
const TOKEN_CHARS_PER_CHANGE: usize = 4;
const UUID_LEN: usize = 36;
const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];
const ULID_LEN: usize = 26;

impl Param {
    pub const ALL: [Self; 10] = [
        Self::Id,
        Self::Uuid,
        Self::Ulid,
        Self::Hex,
        Self::Token,
        Self::Email,
        Self::Key,
        Self::Name,
        Self::Segment,
        Self::Rest,
    ];

    /// The segment a template holds for this parameter.
    pub fn placeholder(self) -> &'static str {
        match self {
            Self::Id => "{id}",
            Self::Uuid => "{uuid}",
            Self::Ulid => "{ulid}",
            Self::Hex => "{hex}",
            Self::Token => "{token}",
            Self::Email => "{email}",
            Self::Key => "{key}",
            Self::Name => "{name}",
            Self::Segment => "{segment}",
            Self::Rest => "{rest}",
        }
    }

    /// The parameter whose placeholder `segment` is: templating a template changes nothing.
    pub fn from_placeholder(segment: &str) -> Option<Self> {
        if !segment.starts_with('{') {
            return None;
        }
        Self::ALL.into_iter().find(|p| p.placeholder() == segment)
    }
}

/// What one pass over a segment found.
#[derive(Default)]
struct Shape {
    digits: usize,
    hex_only: bool,
    base64url_only: bool,
    crockford_only: bool,
    class_changes: usize,
    at: Option<usize>,
}

fn scan(segment: &[u8]) -> Shape {
    let mut shape = Shape {
        hex_only: true,
        base64url_only: true,
        crockford_only: true,
        ..Shape::default()
    };
    // 0 = none yet, 1 = lower, 2 = upper, 3 = digit; `-` and `_` do not reset it.
    let mut last_class = 0u8;
    // Bytes left of a percent escape: its hex digits encode a byte, they are not digits.
    let mut escape_left = 0u8;
    for (i, &b) in segment.iter().enumerate() {
        let escaped = escape_left > 0;
        escape_left = escape_left.saturating_sub(1);
        if b == b'%' && is_escape(&segment[i + 1..]) {
            escape_left = 2;
        }
        let class = match b {
            _ if escaped => 0,
            b'a'..=b'z' => 1,
            b'A'..=b'Z' => 2,
            b'0'..=b'9' => 3,
            _ => 0,
        };
        if class == 3 {
            shape.digits += 1;
        }
        if class != 0 {
            // An upper-case letter followed by lower-case ones starts a word (camelCase):
            // not a change of class as randomness makes them.
            let word_start = last_class == 2 && class == 1;
            if last_class != 0 && class != last_class && !word_start {
                shape.class_changes += 1;
            }
            last_class = class;
        }
        shape.hex_only &= b.is_ascii_hexdigit();
        shape.base64url_only &= class != 0 || b == b'-' || b == b'_';
        shape.crockford_only &= class != 0 && !matches!(b | 0x20, b'i' | b'l' | b'o' | b'u');
        if b == b'@' && shape.at.is_none() {
            shape.at = Some(i);
        }
    }
    shape
}

/// Whether `rest` starts with the two hex digits of a percent escape.
fn is_escape(rest: &[u8]) -> bool {
    rest.len() >= 2 && rest[0].is_ascii_hexdigit() && rest[1].is_ascii_hexdigit()
}

fn is_uuid(segment: &[u8]) -> bool {
    segment.len() == UUID_LEN
        && segment.iter().enumerate().all(|(i, &b)| {
            if UUID_DASHES.contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

fn is_email(segment: &[u8], at: Option<usize>) -> bool {
    let Some(at) = at else { return false };
    let domain = &segment[at + 1..];
    at > 0 && domain.len() >= 3 && domain.contains(&b'.') && !domain.contains(&b'@')
}

/// The parameter `segment` stands for, or `None` for a literal name. Segments over
/// `max_len` bytes are [`Param::Segment`] whatever they hold: they are identifiers or blobs,
/// and keeping them would let one client make templates as long as its requests.
pub fn classify(segment: &str, max_len: usize) -> Option<Param> {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    if bytes[0] == b'{'
        && let Some(p) = Param::from_placeholder(segment)
    {
        return Some(p);
    }
    if bytes.len() > max_len {
        return Some(Param::Segment);
    }
    let shape = scan(bytes);
    let len = bytes.len();
    if shape.digits == len {
        return Some(Param::Id);
    }
    if is_uuid(bytes) {
        return Some(Param::Uuid);
    }
    if len == ULID_LEN && shape.crockford_only && (b'0'..=b'7').contains(&bytes[0]) {
        return Some(Param::Ulid);
    }
    if len >= MIN_TOKEN_LEN && shape.hex_only {
        return Some(Param::Hex);
    }
    if is_email(bytes, shape.at) {
        return Some(Param::Email);
    }
    // A long base64url segment with several digits is a token too, so one endpoint's tokens
    // do not split between `{token}` and `{key}` by how random each one happened to look.
    if len >= MIN_TOKEN_LEN
        && shape.base64url_only
        && (shape.class_changes * TOKEN_CHARS_PER_CHANGE >= len || shape.digits >= MIN_MIXED_DIGITS)
    {
        return Some(Param::Token);
    }
    if len >= MIN_MIXED_LEN && shape.digits >= MIN_MIXED_DIGITS {
        return Some(Param::Key);
    }
    None
}
