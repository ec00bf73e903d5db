//! The files of one run: certificate, policy, daemon config and the nginx configs.

use super::*;
use crate::util::{command, output};
use anyhow::{Context, Result, ensure};
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) upstream_conf: PathBuf,
    pub(crate) front_conf: PathBuf,
}

impl Files {
    /// Certificate, policy, daemon config and the two nginx configs, in `dir` (made readable
    /// by the service user the gateway and nginx's workers run as).
    pub(crate) fn write(dir: &Path, pin_root: &Path) -> Result<Files> {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("chmod {}", dir.display()))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        output(
            command("openssl")
                .args(["req", "-x509", "-newkey", "ec"])
                .args([
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "1",
                ])
                .args(["-subj", "/CN=bench.test", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl req (self-signed certificate)",
        )?;
        for path in [&cert, &key] {
            // The gateway re-reads them as the service user on reload; nobody else needs them.
            std::os::unix::fs::chown(path, Some(NOBODY_UID), None)
                .with_context(|| format!("chown {}", path.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_MODE))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        let policy = dir.join("policy.toml");
        write_readable(&policy, &policy_toml(&sha256_hex(API_KEY)?))?;
        let config = dir.join("api-shield.toml");
        write_readable(&config, &daemon_toml(dir, pin_root, &policy, &cert, &key))?;
        let upstream_conf = dir.join("upstream.conf");
        write_readable(&upstream_conf, &upstream_nginx_conf(&dir.join("upstream")))?;
        let front_conf = dir.join("front.conf");
        write_readable(
            &front_conf,
            &front_nginx_conf(&dir.join("front"), &cert, &key),
        )?;
        for sub in ["upstream", "front"] {
            fs::create_dir(dir.join(sub)).context("create nginx's prefix")?;
        }
        Ok(Files {
            dir: dir.to_owned(),
            config,
            socket: dir.join("ctl.sock"),
            log: dir.join("daemon.log"),
            upstream_conf,
            front_conf,
        })
    }
}

pub(crate) fn write_readable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(READABLE_MODE))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Lowercase hex SHA-256 of `text`, by coreutils' `sha256sum` (xtask has no hashing crate).
pub(crate) fn sha256_hex(text: &str) -> Result<String> {
    const HEX_DIGITS: usize = 64;
    let file = tempfile::NamedTempFile::new().context("temporary file for sha256sum")?;
    fs::write(file.path(), text).context("write the key for sha256sum")?;
    let out = output(command("sha256sum").arg(file.path()), "sha256sum")?;
    let hex = out.split_whitespace().next().unwrap_or_default().to_owned();
    ensure!(
        hex.len() == HEX_DIGITS && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "sha256sum printed {out:?}"
    );
    Ok(hex)
}

/// (a) `/auth`: the key, a plan with a rate limit and a quota that are never reached; (b)
/// `/open`: public, no limits. The detector is off: nothing here is abuse.
pub(crate) fn policy_toml(key_sha256: &str) -> String {
    format!(
        r#"realm = "bench"
unmatched = "deny"

[[api_keys]]
hash = "sha256:{key_sha256}"
identity = "{IDENTITY}"
plan = "bench"

[plans.bench]
rate = [{{ name = "burst", rate = {RATE_PER_SECOND}, per = "1s", burst = {RATE_PER_SECOND}, key = ["identity"] }}]
quota = [{{ name = "daily", limit = {DAILY_QUOTA}, window = "day" }}]

[[routes]]
name = "auth"
path_prefix = "/auth"
auth = ["api_key"]
api_key_header = "x-api-key"

[[routes]]
name = "open"
path_prefix = "/open"
auth = []

[detector]
enabled = false
"#
    )
}

/// Kernel limits off: the XDP program sits on an interface the load never crosses anyway.
pub(crate) fn daemon_toml(
    dir: &Path,
    pin_root: &Path,
    policy: &Path,
    cert: &Path,
    key: &Path,
) -> String {
    format!(
        r#"pin_root = "{pin_root}"
state_dir = "{state}"
audit_log = "{audit}"
run_as = "{RUN_AS}"

[limits]
packets_per_second = 0
syn_per_second = 0

[gateway]
check_listen = "{LOOPBACK}:{CHECK_PORT}"
policy_file = "{policy}"
default_upstream = "http://{LOOPBACK}:{UPSTREAM_PORT}"

[[gateway.listeners]]
listen = "{LOOPBACK}:{GATEWAY_PORT}"
tls_cert = "{cert}"
tls_key = "{key}"
"#,
        pin_root = pin_root.display(),
        state = dir.join("state").display(),
        audit = dir.join("audit.jsonl").display(),
        policy = policy.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// What both nginx instances share: foreground master (so its pid is the one spawned), no
/// access log, every path under `prefix`, unprivileged workers.
pub(crate) fn nginx_common(prefix: &Path, workers: u32) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\nuser {RUN_AS} {NOBODY_GROUP};\n\
         pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}\n"
    )
}

pub(crate) fn nginx_http_common(prefix: &Path) -> String {
    let p = prefix.display();
    format!(
        "    access_log off;\n\
         \x20   client_body_temp_path {p}/body;\n\
         \x20   proxy_temp_path {p}/proxy;\n\
         \x20   fastcgi_temp_path {p}/fastcgi;\n\
         \x20   uwsgi_temp_path {p}/uwsgi;\n\
         \x20   scgi_temp_path {p}/scgi;\n\
         \x20   keepalive_requests {KEEPALIVE_REQUESTS};\n"
    )
}

pub(crate) fn upstream_nginx_conf(prefix: &Path) -> String {
    format!(
        "{}http {{\n{}\
         \x20   server {{\n\
         \x20       listen {LOOPBACK}:{UPSTREAM_PORT};\n\
         \x20       location / {{\n\
         \x20           default_type text/plain;\n\
         \x20           return 200 \"{UPSTREAM_BODY}\";\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        nginx_common(prefix, UPSTREAM_WORKERS),
        nginx_http_common(prefix),
    )
}

/// Both nginx locations: keep-alive to the upstream, the headers the gateway also sets (client
/// address, scheme), and the key removed, as the gateway's `strip_credentials` does.
pub(crate) const PROXY_DIRECTIVES: &str = "            proxy_pass http://backend;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Real-IP $remote_addr;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20           proxy_set_header X-Api-Key \"\";\n";

/// (c): the key checked by `map` + `if` (rewrite phase: a refused request never reaches the
/// limiter), then `limit_req` per key.
pub(crate) fn front_nginx_conf(prefix: &Path, cert: &Path, key: &Path) -> String {
    let proxy = PROXY_DIRECTIVES;
    format!(
        "{}http {{\n{}\
         \x20   map $http_x_api_key $key_ok {{ default 0; \"{API_KEY}\" 1; }}\n\
         \x20   limit_req_zone $http_x_api_key zone=bench:1m rate={RATE_PER_SECOND}r/s;\n\
         \x20   upstream backend {{\n\
         \x20       server {LOOPBACK}:{UPSTREAM_PORT};\n\
         \x20       keepalive {UPSTREAM_KEEPALIVE};\n\
         \x20       keepalive_requests {KEEPALIVE_REQUESTS};\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {LOOPBACK}:{NGINX_PORT} ssl;\n\
         \x20       ssl_certificate {cert};\n\
         \x20       ssl_certificate_key {key};\n\
         \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20       location /auth/ {{\n\
         \x20           if ($key_ok = 0) {{ return 401; }}\n\
         \x20           limit_req zone=bench burst={RATE_PER_SECOND} nodelay;\n\
         {proxy}\
         \x20       }}\n\
         \x20       location /open/ {{\n\
         {proxy}\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        nginx_common(prefix, FRONT_WORKERS),
        nginx_http_common(prefix),
        cert = cert.display(),
        key = key.display(),
    )
}
