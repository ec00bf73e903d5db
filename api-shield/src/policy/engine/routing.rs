//! Routes and plans as the engine holds them, and which route a request takes.

use super::super::config::{KeyPart, QuotaScope, RouteConfig};
use super::super::path::prefix_matches;
use super::super::quota::LimitSpec;
use super::super::request::RequestMeta;
use super::Engine;

pub(super) struct Plan {
    pub(super) rates: Vec<(LimitSpec, Vec<KeyPart>)>,
    pub(super) quotas: Vec<(LimitSpec, QuotaScope)>,
}

#[derive(Debug)]
pub(super) enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` → `.example.com`
    Suffix(String),
}

impl HostMatch {
    fn rank(&self, host: &str) -> Option<u8> {
        match self {
            Self::Any => Some(0),
            Self::Exact(h) => (h == host).then_some(2),
            Self::Suffix(s) => (host.len() > s.len() && host.ends_with(s.as_str())).then_some(1),
        }
    }
}

pub(super) struct Route {
    pub(super) cfg: RouteConfig,
    pub(super) host: HostMatch,
    pub(super) prefix: String,
    pub(super) limits: Vec<(LimitSpec, Vec<KeyPart>)>,
}

impl Engine {
    pub(super) fn route_for(&self, req: &RequestMeta, path: &str) -> Option<&Route> {
        let host = req.host_name();
        self.routes
            .iter()
            .filter(|r| {
                r.cfg.methods.is_empty()
                    || r.cfg
                        .methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(&req.method))
            })
            .filter(|r| prefix_matches(path, &r.prefix, r.cfg.case_insensitive))
            .filter_map(|r| {
                let rank = r.host.rank(&host)?;
                // Host match, then longest prefix, then a route naming the method.
                Some(((rank, r.prefix.len(), !r.cfg.methods.is_empty()), r))
            })
            .max_by_key(|(score, _)| *score)
            .map(|(_, r)| r)
    }

    pub(super) fn has_plan(&self, name: &str) -> bool {
        self.plans.contains_key(name)
    }
}
