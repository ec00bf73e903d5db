//! What a transport tells the engine about one request: HTTP metadata only, no body, no socket.

use std::{fmt, net::IpAddr};

/// Request headers with case-insensitive names, in arrival order. Repeated names are kept.
///
/// `Debug` prints header names and only the values of a short allowlist of harmless headers,
/// so a request can be logged without leaking credentials (Authorization, cookies, API keys
/// under any header name).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

/// Headers whose values `Debug` may show.
const SHOWN_IN_DEBUG: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "content-type",
    "content-length",
    "x-forwarded-for",
    "x-request-id",
];

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header (a repeated name adds another value).
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, compared case-insensitively.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no header.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.entries {
            let shown = SHOWN_IN_DEBUG.iter().any(|s| s.eq_ignore_ascii_case(name));
            if shown {
                map.entry(name, value);
            } else {
                map.entry(name, &format_args!("[redacted]"));
            }
        }
        map.finish()
    }
}

/// One request as the policy engine sees it.
#[derive(Clone)]
pub struct RequestMeta {
    /// The client's address, as the transport established it (TCP peer, or a trusted proxy's
    /// `Forwarded`/PROXY header).
    pub client_ip: IpAddr,
    /// No untrusted hop named the client: `client_ip` is a trusted proxy's own address.
    /// Nothing is decided about it (no per-address limit, no detection, no block): that would
    /// hit everyone behind the proxy. Identities are still limited.
    pub client_is_proxy: bool,
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Host (`Host` or `:authority`), with or without a port.
    pub host: String,
    /// Path without the query, e.g. `/v1/items`.
    pub path: String,
    /// The raw query string without `?`, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: Headers,
}

impl RequestMeta {
    /// A request with no headers and no query.
    pub fn new(
        client_ip: IpAddr,
        method: impl Into<String>,
        host: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        Self {
            // One form per client whatever the listener: limits, detection and blocks key on it.
            client_ip: client_ip.to_canonical(),
            client_is_proxy: false,
            method: method.into(),
            host: host.into(),
            path: path.into(),
            query: None,
            headers: Headers::new(),
        }
    }

    /// Builder: adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Builder: sets the raw query string.
    #[must_use]
    pub fn query(mut self, query: &str) -> Self {
        self.query = Some(query.to_owned());
        self
    }

    /// The first value of query parameter `name` (percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).as_deref() == Some(name)).then(|| percent_decode(v))?
        })
    }

    /// The client's address when decisions may be made about it: `None` when it is only a
    /// trusted proxy's (see [`Self::client_is_proxy`]).
    pub fn network_ip(&self) -> Option<IpAddr> {
        (!self.client_is_proxy).then_some(self.client_ip)
    }

    /// The host without port, lower-cased.
    pub fn host_name(&self) -> String {
        host_without_port(&self.host).to_ascii_lowercase()
    }
}

impl fmt::Debug for RequestMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestMeta")
            .field("client_ip", &self.client_ip)
            .field("client_is_proxy", &self.client_is_proxy)
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            // A query may carry an API key.
            .field("query", &self.query.as_ref().map(|_| "[redacted]"))
            .field("headers", &self.headers)
            .finish()
    }
}

/// `example.com:443` → `example.com`, `[::1]:8443` → `::1`.
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Percent-decoding with `+` as space; `None` on a malformed escape or non-UTF-8 result.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive_and_debug_redacts() {
        let req = RequestMeta::new(
            "192.0.2.1".parse().unwrap(),
            "GET",
            "Api.Example:8443",
            "/x",
        )
        .header("Authorization", "Bearer secret-token")
        .header("X-Api-Key", "k-123")
        .header("User-Agent", "curl")
        .query("a=1&api_key=k%2D123");
        assert_eq!(
            req.headers.get("authorization"),
            Some("Bearer secret-token")
        );
        assert_eq!(req.headers.get("x-api-KEY"), Some("k-123"));
        assert_eq!(req.query_param("api_key").as_deref(), Some("k-123"));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(req.host_name(), "api.example");
        let dbg = format!("{req:?}");
        assert!(
            !dbg.contains("secret-token") && !dbg.contains("k-123"),
            "{dbg}"
        );
        assert!(dbg.contains("curl"));
    }

    #[test]
    fn ipv4_mapped_clients_are_their_ipv4_address() {
        let mapped = RequestMeta::new("::ffff:198.18.0.5".parse().unwrap(), "GET", "a", "/");
        assert_eq!(mapped.client_ip, "198.18.0.5".parse::<IpAddr>().unwrap());
        // Other IPv6 forms that embed an IPv4 address stay IPv6.
        for v6 in ["::198.18.0.5", "64:ff9b::198.18.0.5", "2001:db8::1"] {
            let req = RequestMeta::new(v6.parse().unwrap(), "GET", "a", "/");
            assert_eq!(req.client_ip, v6.parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(host_without_port("[::1]:8443"), "::1");
        assert_eq!(host_without_port("a.b"), "a.b");
        assert_eq!(host_without_port("a.b:80"), "a.b");
        assert_eq!(host_without_port("::1"), "::1");
    }
}
