//! The bearer token: loaded once, kept only as a digest, compared in constant time.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hyper::header::HeaderValue;
use ring::digest::{SHA256, SHA256_OUTPUT_LEN, digest};
use subtle::ConstantTimeEq;

use super::PushError;

/// Permission bits of group and others: a token file with any of them is refused.
const GROUP_OTHER_BITS: u32 = 0o077;
const MODE_BITS: u32 = 0o7777;
/// Far beyond any sensible token; stops a wrong path (a log file, say) from being read whole.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// Tokens shorter than this are accepted, but with a warning: they can be guessed.
const WEAK_TOKEN_LEN: usize = 16;
const SCHEME: &str = "Bearer";

/// The shared secret of the push API.
///
/// Only its SHA-256 digest is kept. Comparing digests of equal length in constant time reveals
/// neither where a guess first differs nor how long the token is.
#[derive(Clone)]
pub struct Token {
    digest: [u8; SHA256_OUTPUT_LEN],
}

/// The outcome of checking an `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    Granted,
    /// No header, or not a `Bearer` one.
    Missing,
    /// A bearer token that is not ours.
    Invalid,
}

impl Token {
    /// A token given directly, such as from a test or a secret store. Refuses an empty token and
    /// one that could not be sent in a header (whitespace, control or non-ASCII characters).
    pub fn new(secret: String) -> Result<Self, PushError> {
        Self::checked(&secret, String::new())
    }

    /// Reads the token from `path`, which must be a regular file not accessible to group or
    /// others. Trailing line ends are dropped, so `echo "$TOKEN" > file` works.
    pub fn from_file(path: &Path) -> Result<Self, PushError> {
        let read_error = |source| PushError::TokenRead {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        // The mode of the file opened, not of whatever the path names a moment later.
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(PushError::TokenNotFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & MODE_BITS;
        if mode & GROUP_OTHER_BITS != 0 {
            return Err(PushError::TokenMode {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Vec::new();
        // One byte past the limit tells a file of exactly the limit from a larger one.
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(PushError::TokenTooLarge {
                path: path.to_owned(),
                limit: MAX_TOKEN_FILE_BYTES,
            });
        }
        let origin = format!(" in {}", path.display());
        let text = String::from_utf8(bytes).map_err(|_| PushError::TokenCharacters {
            origin: origin.clone(),
        })?;
        Self::checked(text.trim_end_matches(['\n', '\r']), origin)
    }

    fn checked(secret: &str, origin: String) -> Result<Self, PushError> {
        if secret.is_empty() {
            return Err(PushError::TokenEmpty { origin });
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PushError::TokenCharacters { origin });
        }
        if secret.len() < WEAK_TOKEN_LEN {
            tracing::warn!(
                "the push token{origin} is shorter than {WEAK_TOKEN_LEN} characters and could \
                 be guessed; use a random one such as `openssl rand -hex 32`"
            );
        }
        Ok(Self {
            digest: sha256(secret.as_bytes()),
        })
    }

    /// Checks an `Authorization` header value against the token.
    pub(crate) fn check(&self, authorization: Option<&HeaderValue>) -> Auth {
        let Some(presented) = authorization.and_then(|v| bearer(v.as_bytes())) else {
            return Auth::Missing;
        };
        if bool::from(sha256(presented).ct_eq(&self.digest)) {
            Auth::Granted
        } else {
            Auth::Invalid
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The credentials of a `Bearer` header value (the scheme is case-insensitive, RFC 9110).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME.as_bytes()) || rest.first() != Some(&b' ') {
        return None;
    }
    let credentials = rest.trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

fn sha256(bytes: &[u8]) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const OWNER_ONLY: u32 = 0o600;
    const WORLD_READABLE: u32 = 0o644;
    const GROUP_READABLE: u32 = 0o640;
    const PRIVATE_DIR: u32 = 0o700;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    fn token_file(content: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push.token");
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn checks_bearer_headers() {
        let token = Token::new(SECRET.to_owned()).unwrap();
        assert_eq!(token.check(None), Auth::Missing);
        assert_eq!(
            token.check(Some(&header(&format!("Bearer {SECRET}")))),
            Auth::Granted
        );
        assert_eq!(
            token.check(Some(&header(&format!("bearer  {SECRET}")))),
            Auth::Granted
        );
        assert_eq!(
            token.check(Some(&header(&format!("Bearer {SECRET}x")))),
            Auth::Invalid
        );
        assert_eq!(token.check(Some(&header("Bearer x"))), Auth::Invalid);
        assert_eq!(
            token.check(Some(&header(&format!("Basic {SECRET}")))),
            Auth::Missing
        );
        assert_eq!(
            token.check(Some(&header(&format!("Bearer{SECRET}")))),
            Auth::Missing
        );
        assert_eq!(token.check(Some(&header("Bearer "))), Auth::Missing);
        assert_eq!(token.check(Some(&header(SECRET))), Auth::Missing);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let token = Token::new(SECRET.to_owned()).unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn refuses_unusable_secrets() {
        assert!(matches!(
            Token::new(String::new()),
            Err(PushError::TokenEmpty { .. })
        ));
        for bad in ["two words", "tab\there", "line\nbreak", "caf\u{e9}"] {
            assert!(
                matches!(
                    Token::new(bad.to_owned()),
                    Err(PushError::TokenCharacters { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reads_an_owner_only_file_dropping_the_line_end() {
        let (_dir, path) = token_file(&format!("{SECRET}\r\n"), OWNER_ONLY);
        let token = Token::from_file(&path).unwrap();
        assert_eq!(
            token.check(Some(&header(&format!("Bearer {SECRET}")))),
            Auth::Granted
        );
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        for mode in [WORLD_READABLE, GROUP_READABLE] {
            let (_dir, path) = token_file(SECRET, mode);
            let err = Token::from_file(&path).unwrap_err();
            assert!(
                matches!(err, PushError::TokenMode { mode: m, .. } if m == mode),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&path.display().to_string())
                    && message.contains(&format!("{mode:04o}")),
                "{message}"
            );
        }
    }

    #[test]
    fn refuses_empty_missing_and_oversize_files() {
        let (_dir, path) = token_file("\n", OWNER_ONLY);
        let err = Token::from_file(&path).unwrap_err();
        assert!(matches!(err, PushError::TokenEmpty { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));

        let missing = path.with_file_name("absent");
        assert!(matches!(
            Token::from_file(&missing),
            Err(PushError::TokenRead { .. })
        ));

        let (_dir, path) = token_file(&"x".repeat(MAX_TOKEN_FILE_BYTES as usize + 1), OWNER_ONLY);
        assert!(matches!(
            Token::from_file(&path),
            Err(PushError::TokenTooLarge { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(PRIVATE_DIR)).unwrap();
        assert!(matches!(
            Token::from_file(dir.path()),
            Err(PushError::TokenNotFile { .. })
        ));
    }
}
