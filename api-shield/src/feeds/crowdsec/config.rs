//! The `[crowdsec]` configuration section and the bouncer key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Uri;
use serde::{Deserialize, Serialize};

use super::{
    CrowdsecError, DEFAULT_INTERVAL, DEFAULT_LIST, DEFAULT_TYPE, DEFAULT_URL, GROUP_WORLD_BITS,
    MAX_INTERVAL, MIN_INTERVAL, PERMISSION_BITS, SCOPE_IP, SCOPE_RANGE,
};
use crate::lists::valid_list_name;

/// The `[crowdsec]` section of the daemon's configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CrowdsecConfig {
    /// Base URL of the local API; plain `http` (it listens on loopback by default).
    #[serde(default = "default_url")]
    pub url: String,
    /// File holding the bouncer key (`cscli bouncers add NAME -o raw`), mode 0600 or stricter.
    pub api_key_file: PathBuf,
    /// Poll period for deltas.
    #[serde(default = "default_interval", with = "humantime_duration")]
    pub interval: Duration,
    /// The list (origin) the decisions go to.
    #[serde(default = "default_list")]
    pub list: String,
    /// Decision scopes to enforce; only `Ip` and `Range` name addresses.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Decision types to enforce (`ban`; `captcha` and others mean nothing at layer 3).
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    /// IPv4 ranges shorter than this are skipped and counted: a compromised or mistaken
    /// LAPI must not be able to ban a continent.
    #[serde(default = "default_min_prefix_v4")]
    pub min_prefix_v4: u8,
    /// The same for IPv6.
    #[serde(default = "default_min_prefix_v6")]
    pub min_prefix_v6: u8,
    /// Longer answers are refused and change nothing; they are read up to this size, never
    /// beyond, and decoded one decision at a time.
    #[serde(default = "default_max_answer_bytes")]
    pub max_answer_bytes: u64,
}

/// The default answer cap. A startup answer holds every active decision, some 250 bytes each:
/// this is about a million, ten times the largest community blocklists; the memory it may
/// take is the answer itself plus the decisions taken from it.
pub const DEFAULT_MAX_ANSWER_BYTES: u64 = 256 << 20;
/// Below this even a small real answer would not fit.
pub const MIN_ANSWER_BYTES: u64 = 4 << 10;
/// Above this an answer cannot be read within `REQUEST_TIMEOUT` on a loopback link anyway.
pub const MAX_ANSWER_BYTES: u64 = 4 << 30;

fn default_max_answer_bytes() -> u64 {
    DEFAULT_MAX_ANSWER_BYTES
}

/// Shortest IPv4 range taken from CrowdSec unless configured.
pub const DEFAULT_MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 range taken from CrowdSec unless configured.
pub const DEFAULT_MIN_PREFIX_V6: u8 = 16;
const V4_BITS: u8 = 32;
const V6_BITS: u8 = 128;

fn default_min_prefix_v4() -> u8 {
    DEFAULT_MIN_PREFIX_V4
}

fn default_min_prefix_v6() -> u8 {
    DEFAULT_MIN_PREFIX_V6
}

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

fn default_list() -> String {
    DEFAULT_LIST.to_string()
}

fn default_scopes() -> Vec<String> {
    vec![SCOPE_IP.to_string(), SCOPE_RANGE.to_string()]
}

fn default_types() -> Vec<String> {
    vec![DEFAULT_TYPE.to_string()]
}

/// `interval = "10s"` in humantime syntax.
mod humantime_duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(D::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl CrowdsecConfig {
    /// A configuration with every default and `api_key_file`.
    pub fn new(api_key_file: PathBuf) -> Self {
        Self {
            url: default_url(),
            api_key_file,
            interval: DEFAULT_INTERVAL,
            list: default_list(),
            scopes: default_scopes(),
            types: default_types(),
            min_prefix_v4: DEFAULT_MIN_PREFIX_V4,
            min_prefix_v6: DEFAULT_MIN_PREFIX_V6,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    pub fn validate(&self) -> Result<(), CrowdsecError> {
        let invalid = |field: &'static str, reason: String| CrowdsecError::Config { field, reason };
        stream_base(&self.url).map_err(|e| invalid("url", e.to_string()))?;
        if self.api_key_file.as_os_str().is_empty() {
            return Err(invalid("api_key_file", "must not be empty".into()));
        }
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            return Err(invalid(
                "interval",
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(MAX_INTERVAL)
                ),
            ));
        }
        valid_list_name(&self.list).map_err(|e| invalid("list", e.to_string()))?;
        if self.min_prefix_v4 > V4_BITS {
            return Err(invalid("min_prefix_v4", format!("must be 0-{V4_BITS}")));
        }
        if self.min_prefix_v6 > V6_BITS {
            return Err(invalid("min_prefix_v6", format!("must be 0-{V6_BITS}")));
        }
        if !(MIN_ANSWER_BYTES..=MAX_ANSWER_BYTES).contains(&self.max_answer_bytes) {
            return Err(invalid(
                "max_answer_bytes",
                format!("must be between {MIN_ANSWER_BYTES} and {MAX_ANSWER_BYTES}"),
            ));
        }
        if self.scopes.is_empty() {
            return Err(invalid("scopes", "must name at least one scope".into()));
        }
        for scope in &self.scopes {
            if !is_address_scope(scope) {
                return Err(invalid(
                    "scopes",
                    format!(
                        "`{scope}` names no addresses; only `{SCOPE_IP}` and `{SCOPE_RANGE}` \
                         can be enforced"
                    ),
                ));
            }
        }
        if self.types.is_empty() {
            return Err(invalid(
                "types",
                "must name at least one decision type".into(),
            ));
        }
        if let Some(bad) = self.types.iter().find(|t| t.trim().is_empty()) {
            return Err(invalid("types", format!("`{bad}` is not a decision type")));
        }
        Ok(())
    }

    /// The answer cap as a length (it fits: at most `MAX_ANSWER_BYTES` once validated).
    pub fn max_answer_bytes(&self) -> usize {
        usize::try_from(self.max_answer_bytes).unwrap_or(usize::MAX)
    }

    /// Reads the bouncer key from `api_key_file` (see [`read_api_key`]).
    pub fn read_api_key(&self) -> Result<String, CrowdsecError> {
        read_api_key(&self.api_key_file)
    }
}

fn is_address_scope(scope: &str) -> bool {
    scope.eq_ignore_ascii_case(SCOPE_IP) || scope.eq_ignore_ascii_case(SCOPE_RANGE)
}

/// Why a local API URL is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum UrlError {
    #[error("`{url}` is not a URL: {source}")]
    Parse {
        url: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("`{0}`: https is not supported; point it at the local API's plain listener")]
    Https(String),
    #[error("`{0}` must start with `http://`")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{0}` holds credentials; the key goes in api_key_file")]
    Credentials(String),
    #[error("`{0}` must not have a query")]
    Query(String),
}

/// The URL with the stream path's prefix checked and its trailing `/` removed.
pub(super) fn stream_base(url: &str) -> Result<String, UrlError> {
    let uri: Uri = url.parse().map_err(|source| UrlError::Parse {
        url: url.to_owned(),
        source,
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(UrlError::Https(url.to_owned())),
        _ => return Err(UrlError::Scheme(url.to_owned())),
    }
    let Some(authority) = uri.authority() else {
        return Err(UrlError::NoHost(url.to_owned()));
    };
    // Credentials in the URL would end up in logs and in `api-shield lists`.
    if authority.as_str().contains('@') {
        return Err(UrlError::Credentials(url.to_owned()));
    }
    if uri.query().is_some() {
        return Err(UrlError::Query(url.to_owned()));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Reads a bouncer key: the file must be readable by its owner alone (it is a credential that
/// lets anyone read every ban), and hold one non-empty line of visible ASCII.
pub fn read_api_key(path: &Path) -> Result<String, CrowdsecError> {
    let key_file = |source| CrowdsecError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(key_file)?;
    let mode = meta.permissions().mode();
    if mode & GROUP_WORLD_BITS != 0 {
        return Err(CrowdsecError::KeyPermissions {
            path: path.to_path_buf(),
            mode: mode & PERMISSION_BITS,
        });
    }
    let text = std::fs::read_to_string(path).map_err(key_file)?;
    let key = text.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CrowdsecError::KeyFormat(path.to_path_buf()));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    // ---- configuration -------------------------------------------------------------------

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: CrowdsecConfig =
            toml::from_str(r#"api_key_file = "/etc/api-shield/cs.key""#).expect("defaults");
        assert_eq!(cfg, CrowdsecConfig::new("/etc/api-shield/cs.key".into()));
        assert_eq!(cfg.url, "http://127.0.0.1:8080");
        assert_eq!(cfg.interval, Duration::from_secs(10));
        assert_eq!(cfg.list, "crowdsec");
        assert_eq!(cfg.scopes, ["Ip", "Range"]);
        assert_eq!(cfg.types, ["ban"]);
        cfg.validate().expect("defaults are valid");

        let cfg: CrowdsecConfig = toml::from_str(
            r#"
            url = "http://10.0.0.2:8081/"
            api_key_file = "k"
            interval = "30s"
            list = "cs-main"
            scopes = ["Ip"]
            types = ["ban", "captcha"]
            "#,
        )
        .expect("full");
        assert_eq!(cfg.interval, Duration::from_secs(30));
        cfg.validate().expect("valid");
        let round: CrowdsecConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(round, cfg);

        let err = toml::from_str::<CrowdsecConfig>("api_key_file = \"k\"\nkey = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key"), "{err}");
        assert!(toml::from_str::<CrowdsecConfig>(r#"url = "http://x""#).is_err());
        assert!(
            toml::from_str::<CrowdsecConfig>("api_key_file = \"k\"\ninterval = \"often\"").is_err()
        );
    }

    #[test]
    fn config_validation() {
        let base = CrowdsecConfig::new("/k".into());
        let field_of = |cfg: CrowdsecConfig| match cfg.validate() {
            Err(CrowdsecError::Config { field, .. }) => field,
            other => panic!("{cfg:?}: {other:?}"),
        };
        for url in [
            "https://127.0.0.1:8080",
            "ftp://x",
            "127.0.0.1:8080",
            "http://user:pw@127.0.0.1:8080",
            "http://127.0.0.1:8080/?a=b",
            "",
        ] {
            let cfg = CrowdsecConfig {
                url: url.into(),
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "url", "{url}");
        }
        for interval in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(7_200),
        ] {
            let cfg = CrowdsecConfig {
                interval,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "interval");
        }
        let cfg = CrowdsecConfig {
            list: "../x".into(),
            ..base.clone()
        };
        assert_eq!(field_of(cfg), "list");
        for scopes in [vec![], vec!["Country".to_string()]] {
            let cfg = CrowdsecConfig {
                scopes,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "scopes");
        }
        for types in [vec![], vec![" ".to_string()]] {
            let cfg = CrowdsecConfig {
                types,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "types");
        }
        let cfg = CrowdsecConfig {
            api_key_file: PathBuf::new(),
            ..base.clone()
        };
        assert_eq!(field_of(cfg), "api_key_file");
        for max_answer_bytes in [0, MIN_ANSWER_BYTES - 1, MAX_ANSWER_BYTES + 1] {
            let cfg = CrowdsecConfig {
                max_answer_bytes,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "max_answer_bytes", "{max_answer_bytes}");
        }
        let cfg: CrowdsecConfig =
            toml::from_str("api_key_file = \"k\"\nmax_answer_bytes = 1048576").expect("a cap");
        assert_eq!(cfg.max_answer_bytes(), 1 << 20);
        cfg.validate().expect("valid");
        assert_eq!(stream_base("http://h:1/").unwrap(), "http://h:1");
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123abcd\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_api_key(&path).unwrap_err();
            assert!(
                matches!(err, CrowdsecError::KeyPermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(!err.to_string().contains("0123abcd"));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_api_key(&path).unwrap(), "0123abcd");
        for bad in ["", "  \n", "two words", "k\u{e9}y"] {
            std::fs::write(&path, bad).unwrap();
            let err = read_api_key(&path).unwrap_err();
            assert!(matches!(err, CrowdsecError::KeyFormat(_)), "{bad:?}: {err}");
        }
        assert!(matches!(
            read_api_key(&dir.path().join("absent")),
            Err(CrowdsecError::KeyFile { .. })
        ));
    }
}
