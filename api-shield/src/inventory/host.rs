//! The inventory of one host: its templater and its endpoints, at most a cap of them; past
//! the cap, new templates are counted in one overflow endpoint per method and the host is
//! flagged, so scanner noise or an API with unbounded path shapes costs a fixed amount.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::endpoint::{EndpointLimits, EndpointStats};
use super::template::{Source, Templater};
use crate::exchange::Exchange;

/// The template under which a saturated host counts requests for templates it has no room
/// for. It does not start with `/`, so no request path ever templates to it.
pub const OVERFLOW_TEMPLATE: &str = "{overflow}";

/// Request methods, closed: an extension method a client makes up is `OTHER`, so methods
/// cannot multiply endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Trace,
    Connect,
    Other,
}

impl HttpMethod {
    pub fn from_method(method: &hyper::Method) -> Self {
        match *method {
            hyper::Method::GET => Self::Get,
            hyper::Method::HEAD => Self::Head,
            hyper::Method::POST => Self::Post,
            hyper::Method::PUT => Self::Put,
            hyper::Method::DELETE => Self::Delete,
            hyper::Method::PATCH => Self::Patch,
            hyper::Method::OPTIONS => Self::Options,
            hyper::Method::TRACE => Self::Trace,
            hyper::Method::CONNECT => Self::Connect,
            _ => Self::Other,
        }
    }

    /// The lower-case name an OpenAPI path item uses; `None` for `OTHER` and `CONNECT`,
    /// which OpenAPI cannot describe.
    pub fn openapi_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Get => "get",
            Self::Head => "head",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Patch => "patch",
            Self::Options => "options",
            Self::Trace => "trace",
            Self::Connect | Self::Other => return None,
        })
    }
}

/// What [`HostInventory::record`] did with an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// An existing endpoint counted it.
    Counted,
    /// A new endpoint appeared for it (an event for the log: possibly a shadow endpoint).
    Created,
    /// The host is at its endpoint cap: the overflow endpoint counted it.
    Overflow,
    /// Nothing counted it: no endpoint matches and the answer does not show one exists.
    NotExisting,
}

/// One host's endpoints.
#[derive(Clone, Debug, Default)]
pub struct HostInventory {
    pub(super) templater: Templater,
    /// Endpoints by template, then method (a handful per template, scanned).
    pub(super) endpoints: HashMap<Box<str>, Vec<(HttpMethod, EndpointStats)>>,
    /// Endpoints held, the overflow ones not included.
    pub(super) endpoint_count: usize,
    /// Set once the cap refused a new endpoint.
    pub(super) saturated: bool,
}

/// One endpoint, as listed.
#[derive(Clone, Copy, Debug)]
pub struct EndpointRef<'a> {
    pub method: HttpMethod,
    pub template: &'a str,
    pub stats: &'a EndpointStats,
}

/// What the host needs to know beyond its templater.
pub(super) struct HostLimits<'a> {
    pub max_endpoints: usize,
    pub endpoint: &'a EndpointLimits,
}

impl HostInventory {
    pub(super) fn new(templater: Templater) -> Self {
        Self {
            templater,
            ..Self::default()
        }
    }

    /// Counts `exchange`; `creates` says whether its answer shows the endpoint exists.
    /// `scratch` is a reused buffer for the template.
    pub(super) fn record(
        &mut self,
        exchange: &Exchange,
        creates: bool,
        limits: &HostLimits<'_>,
        scratch: &mut String,
    ) -> Recorded {
        let method = HttpMethod::from_method(&exchange.method);
        let source = self.templater.template_into(&exchange.path, scratch);
        if let Some(stats) = self.find_mut(scratch, method) {
            stats.record(exchange, limits.endpoint);
            return Recorded::Counted;
        }
        if !creates {
            return Recorded::NotExisting;
        }
        if self.endpoint_count >= limits.max_endpoints {
            self.saturated = true;
            let stats = self.entry(OVERFLOW_TEMPLATE, method);
            stats.record(exchange, limits.endpoint);
            return Recorded::Overflow;
        }
        if source == Source::Learned && self.templater.learn(&exchange.path) {
            self.rekey(limits.endpoint, scratch);
            self.templater.template_into(&exchange.path, scratch);
            if let Some(stats) = self.find_mut(scratch, method) {
                stats.record(exchange, limits.endpoint);
                return Recorded::Counted;
            }
        }
        self.entry(scratch, method)
            .record(exchange, limits.endpoint);
        Recorded::Created
    }

    fn find_mut(&mut self, template: &str, method: HttpMethod) -> Option<&mut EndpointStats> {
        let methods = self.endpoints.get_mut(template)?;
        methods
            .iter_mut()
            .find(|(m, _)| *m == method)
            .map(|(_, s)| s)
    }

    /// The endpoint `(template, method)`, created empty if missing.
    fn entry(&mut self, template: &str, method: HttpMethod) -> &mut EndpointStats {
        let overflow = template == OVERFLOW_TEMPLATE;
        let methods = self.endpoints.entry(template.into()).or_default();
        let at = match methods.iter().position(|(m, _)| *m == method) {
            Some(at) => at,
            None => {
                if !overflow {
                    self.endpoint_count += 1;
                }
                methods.push((method, EndpointStats::default()));
                methods.len() - 1
            }
        };
        &mut methods[at].1
    }

    /// Re-templates every endpoint after the templater changed (a position collapsed, spec
    /// paths arrived), merging those that now share a template.
    pub(super) fn rekey(&mut self, limits: &EndpointLimits, scratch: &mut String) {
        let old = std::mem::take(&mut self.endpoints);
        self.endpoint_count = 0;
        for (template, methods) in old {
            if &*template != OVERFLOW_TEMPLATE {
                self.templater.template_into(&template, scratch);
            } else {
                scratch.clear();
                scratch.push_str(OVERFLOW_TEMPLATE);
            }
            for (method, stats) in methods {
                let into = self.entry(scratch, method);
                if into.requests == 0 {
                    *into = stats;
                } else {
                    into.merge(&stats, limits);
                }
            }
        }
    }

    /// Endpoints held (overflow ones not included).
    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    /// Whether the cap refused an endpoint: the host's figures are incomplete.
    pub fn is_saturated(&self) -> bool {
        self.saturated
    }

    /// The endpoints, overflow ones included (their template is [`OVERFLOW_TEMPLATE`]),
    /// sorted by template then method.
    pub fn endpoints(&self) -> Vec<EndpointRef<'_>> {
        let mut all: Vec<_> = self
            .endpoints
            .iter()
            .flat_map(|(template, methods)| {
                methods.iter().map(|(method, stats)| EndpointRef {
                    method: *method,
                    template,
                    stats,
                })
            })
            .collect();
        all.sort_by(|a, b| (a.template, a.method).cmp(&(b.template, b.method)));
        all
    }

    /// The templater, to template a path the way this host does.
    pub fn templater(&self) -> &Templater {
        &self.templater
    }

    /// Heap bytes held, roughly.
    pub fn heap_bytes(&self) -> usize {
        let endpoints: usize = self
            .endpoints
            .iter()
            .map(|(t, methods)| {
                t.len()
                    + methods
                        .iter()
                        .map(|(_, s)| size_of::<(HttpMethod, EndpointStats)>() + s.heap_bytes())
                        .sum::<usize>()
            })
            .sum();
        endpoints + self.templater.learned_nodes() * size_of::<(Box<str>, usize)>() * 2
    }
}
