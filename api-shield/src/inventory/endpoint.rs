//! The figures one endpoint (host, method, template) keeps: counts, sketches and bounded
//! sets, all of a size fixed by the limits whatever the traffic.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::shape::{JsonShape, ShapeLimits};
use super::sketch::{Hll, LatencyHistogram};
use crate::exchange::Exchange;
use crate::policy::config::AuthMethod;

/// Limits of what one endpoint keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointLimits {
    pub max_content_types: usize,
    pub max_query_names: usize,
    /// Longest content type or query parameter name kept.
    pub max_name_len: usize,
    pub shape: ShapeLimits,
}

/// A set of names that stops growing at a cap and says so.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundedSet {
    #[serde(default)]
    pub items: BTreeSet<String>,
    /// Set when a name was left out (over the cap, or too long).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl BoundedSet {
    pub fn insert(&mut self, name: &str, cap: usize, max_len: usize) {
        if self.items.contains(name) {
            return;
        }
        if self.items.len() >= cap || name.len() > max_len {
            self.truncated = true;
            return;
        }
        self.items.insert(name.to_owned());
    }

    pub fn merge(&mut self, other: &Self, cap: usize, max_len: usize) {
        self.truncated |= other.truncated;
        for name in &other.items {
            self.insert(name, cap, max_len);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|s| s.capacity() + size_of::<String>())
            .sum()
    }
}

/// Status classes: index 0 is 1xx, 4 is 5xx.
pub const STATUS_CLASSES: usize = 5;

/// What an endpoint saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointStats {
    pub requests: u64,
    /// Answers by status class, 1xx to 5xx.
    pub status_classes: [u64; STATUS_CLASSES],
    /// Upstream latency.
    pub latency: LatencyHistogram,
    /// Auth methods seen, in first-seen order (at most one of each).
    pub auth_methods: Vec<AuthMethod>,
    /// Requests without an identity.
    pub anonymous: u64,
    /// Distinct identities.
    pub identities: Hll,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub content_types: BoundedSet,
    pub query_names: BoundedSet,
    /// JSON request bodies sampled.
    pub bodies_sampled: u64,
    pub body: JsonShape,
}

impl EndpointStats {
    /// Counts `exchange` in.
    pub fn record(&mut self, exchange: &Exchange, limits: &EndpointLimits) {
        if self.requests == 0 || exchange.at_ms < self.first_seen_ms {
            self.first_seen_ms = exchange.at_ms;
        }
        self.last_seen_ms = self.last_seen_ms.max(exchange.at_ms);
        self.requests = self.requests.saturating_add(1);
        if let Some(class) = exchange.status.and_then(status_class) {
            self.status_classes[class] = self.status_classes[class].saturating_add(1);
        }
        if let Some(latency) = exchange.upstream_latency {
            self.latency.record(latency);
        }
        match &exchange.identity {
            Some(identity) => {
                if !self.auth_methods.contains(&identity.method) {
                    self.auth_methods.push(identity.method);
                }
                self.identities.insert(identity.id.as_bytes());
            }
            None => self.anonymous = self.anonymous.saturating_add(1),
        }
        if let Some(ct) = &exchange.content_type {
            self.content_types
                .insert(ct, limits.max_content_types, limits.max_name_len);
        }
        for name in &exchange.query_names {
            self.query_names
                .insert(name, limits.max_query_names, limits.max_name_len);
        }
        if let Some(sample) = &exchange.body_sample {
            self.bodies_sampled = self.bodies_sampled.saturating_add(1);
            let mut budget = limits.shape.max_nodes.saturating_sub(self.body.nodes());
            self.body
                .observe(sample.value(), &limits.shape, &mut budget);
        }
    }

    /// Adds `other`'s figures: the endpoint it was is now part of this one.
    pub fn merge(&mut self, other: &Self, limits: &EndpointLimits) {
        if other.requests > 0 && (self.requests == 0 || other.first_seen_ms < self.first_seen_ms) {
            self.first_seen_ms = other.first_seen_ms;
        }
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
        self.requests = self.requests.saturating_add(other.requests);
        for (mine, theirs) in self.status_classes.iter_mut().zip(other.status_classes) {
            *mine = mine.saturating_add(theirs);
        }
        self.latency.merge(&other.latency);
        for method in &other.auth_methods {
            if !self.auth_methods.contains(method) {
                self.auth_methods.push(*method);
            }
        }
        self.anonymous = self.anonymous.saturating_add(other.anonymous);
        self.identities.merge(&other.identities);
        let (ct, qn, len) = (
            limits.max_content_types,
            limits.max_query_names,
            limits.max_name_len,
        );
        self.content_types.merge(&other.content_types, ct, len);
        self.query_names.merge(&other.query_names, qn, len);
        self.bodies_sampled = self.bodies_sampled.saturating_add(other.bodies_sampled);
        let mut budget = limits.shape.max_nodes.saturating_sub(self.body.nodes());
        self.body.merge(&other.body, &mut budget);
    }

    /// Distinct identities, estimated.
    pub fn distinct_identities(&self) -> u64 {
        self.identities.estimate()
    }

    /// Heap bytes held, roughly: what the memory bound is stated in.
    pub fn heap_bytes(&self) -> usize {
        self.latency.heap_bytes()
            + self.identities.heap_bytes()
            + self.auth_methods.capacity() * size_of::<AuthMethod>()
            + self.content_types.heap_bytes()
            + self.query_names.heap_bytes()
            + self.body.heap_bytes()
    }

    /// Checks figures read back from disk against the limits.
    pub fn check(&self, limits: &EndpointLimits) -> Result<(), String> {
        self.latency.check()?;
        let methods = &self.auth_methods;
        if methods
            .iter()
            .enumerate()
            .any(|(i, m)| methods[..i].contains(m))
        {
            return Err("an endpoint lists an auth method twice".into());
        }
        let names = |set: &BoundedSet, cap: usize, what: &str| {
            if set.items.len() > cap || set.items.iter().any(|n| n.len() > limits.max_name_len) {
                Err(format!(
                    "an endpoint holds more or longer {what} than the limits allow"
                ))
            } else {
                Ok(())
            }
        };
        names(
            &self.content_types,
            limits.max_content_types,
            "content types",
        )?;
        names(
            &self.query_names,
            limits.max_query_names,
            "query parameter names",
        )?;
        if self.body.nodes() > limits.shape.max_nodes || self.body.depth() > limits.shape.max_depth
        {
            return Err("an endpoint's body shape is larger or deeper than the limits".into());
        }
        Ok(())
    }
}

/// The class index of `status` (0 for 1xx .. 4 for 5xx); `None` outside 100..=599.
pub fn status_class(status: u16) -> Option<usize> {
    match status {
        100..=599 => Some(usize::from(status / 100 - 1)),
        _ => None,
    }
}
