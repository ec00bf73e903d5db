//! What a SIGHUP replaces: the gateway settings, the policy engine, the routing table and the
//! TLS acceptors, swapped as one value. Connections read it per request (the engine, the
//! routes) or per accept (TLS, timeouts), so a reload drops nothing in flight.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use super::config::GatewayConfig;
use super::contracts::Contracts;
use super::proxy::{tls, upstream::Routing};
use crate::policy::{Engine, InvalidPolicy, JwksFetcher, PolicyConfig};

/// Why a gateway configuration cannot be served; every problem is named.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Problems of the settings or of the routing between them and the policy.
    #[error("{}", .0.join("; "))]
    Problems(Vec<String>),
    #[error("gateway.policy_file {}: {source}", path.display())]
    PolicyRead { path: PathBuf, source: io::Error },
    #[error("gateway.policy_file {}: {source}", path.display())]
    Policy {
        path: PathBuf,
        source: InvalidPolicy,
    },
    #[error(transparent)]
    Tls(#[from] Box<tls::ListenerTlsError>),
}

pub struct Live {
    pub cfg: GatewayConfig,
    pub engine: Arc<Engine>,
    pub routing: Routing,
    /// Per listener address; `None` for plain HTTP.
    pub acceptors: HashMap<SocketAddr, Option<TlsAcceptor>>,
    /// The OpenAPI contracts of `[[gateway.apis]]`.
    pub contracts: Contracts,
}

/// Shared by every task of the gateway.
pub type SharedLive = Arc<ArcSwap<Live>>;

impl Live {
    /// Reads and checks everything `cfg` names. With `previous`, the engine is reloaded from
    /// it (limits continue, nothing refills). Every problem is named; nothing is half-applied.
    pub fn load(
        cfg: GatewayConfig,
        previous: Option<&Live>,
        fetcher: Arc<dyn JwksFetcher>,
    ) -> Result<Self, LiveError> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(LiveError::Problems(problems));
        }
        let path = || cfg.policy_file.clone();
        let invalid = |source| LiveError::Policy {
            path: path(),
            source,
        };
        let text =
            std::fs::read_to_string(&cfg.policy_file).map_err(|source| LiveError::PolicyRead {
                path: path(),
                source,
            })?;
        let policy = PolicyConfig::from_toml_str(&text).map_err(invalid)?;
        let routing = Routing::new(&cfg, &policy).map_err(LiveError::Problems)?;
        // Before the engine reload, which carries state over: a bad document refuses all.
        let contracts = Contracts::load(&cfg.apis).map_err(LiveError::Problems)?;
        let mut acceptors = HashMap::new();
        for l in &cfg.listeners {
            acceptors.insert(l.listen, tls::acceptor(l)?);
        }
        let engine = match previous {
            Some(p) => p.engine.reload(policy),
            None => Engine::new(policy, fetcher),
        }
        .map_err(invalid)?;
        Ok(Self {
            cfg,
            engine: Arc::new(engine),
            routing,
            acceptors,
            contracts,
        })
    }
}
