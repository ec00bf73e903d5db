//! The files the daemon reads again after start, when it may no longer be root: each must be
//! readable by `run_as`, or the first SIGHUP (or feed change) would fail instead of the start.

use std::path::Path;

use super::Config;
pub use crate::privilege::RereadFile;

impl Config {
    /// The config file itself (re-read on SIGHUP), the gateway's policy and TLS files
    /// (re-read on SIGHUP) and the watched feed files.
    pub fn files_read_after_start(&self, config_file: Option<&Path>) -> Vec<RereadFile> {
        let mut files = Vec::new();
        let mut add = |setting: String, path: &Path| {
            files.push(RereadFile {
                setting,
                path: path.to_owned(),
            });
        };
        if let Some(path) = config_file {
            add("the config file".into(), path);
        }
        if let Some(gateway) = &self.gateway {
            add("gateway.policy_file".into(), &gateway.policy_file);
            for (i, api) in gateway.apis.iter().enumerate() {
                add(format!("gateway.apis[{i}].spec"), &api.spec);
            }
            for listener in &gateway.listeners {
                let named = [
                    ("tls_cert", &listener.tls_cert),
                    ("tls_key", &listener.tls_key),
                    ("client_ca", &listener.client_ca),
                ];
                for (key, path) in named {
                    if let Some(path) = path {
                        add(
                            format!("gateway.listeners[{}].{key}", listener.listen),
                            path,
                        );
                    }
                }
            }
        }
        for feed in &self.feeds {
            add(format!("feeds `{}` path", feed.name), &feed.path);
        }
        files
    }
}
