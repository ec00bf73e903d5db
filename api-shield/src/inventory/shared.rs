//! The one inventory a daemon holds, shared by every front door (each gateway thread, the
//! check endpoint) and read by the control socket, the saver and the metrics.
//!
//! A plain mutex, never held across an await: recording is a templating pass and a few
//! counter updates (well under a microsecond), so the threads that share it queue for it
//! rarely and briefly; readers copy what they need out under the lock and format outside it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Inventory, Recorded};
use crate::exchange::Exchange;

/// What the metrics show of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFigures {
    pub host: String,
    /// Endpoints known (overflow ones not included).
    pub endpoints: usize,
    /// Whether the endpoint cap refused an endpoint.
    pub saturated: bool,
}

/// The daemon's inventory behind its lock, with counters read without it.
#[derive(Debug)]
pub struct SharedInventory {
    inner: Mutex<Inventory>,
    /// Exchanges handed in, whether or not an endpoint counted them.
    exchanges: AtomicU64,
    /// Changes since start (exchanges counted by an endpoint): the saver writes only when it
    /// moved.
    changes: AtomicU64,
}

impl SharedInventory {
    pub fn new(inventory: Inventory) -> Self {
        Self {
            inner: Mutex::new(inventory),
            exchanges: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    /// The lock; a panic while it was held leaves figures that are still valid counts, so a
    /// poisoned lock is taken over rather than passed on.
    fn lock(&self) -> MutexGuard<'_, Inventory> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `exchange` in.
    pub fn record(&self, exchange: &Exchange) -> Recorded {
        let recorded = self.lock().record(exchange);
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        if recorded != Recorded::NotExisting {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        recorded
    }

    /// Runs `change` on the inventory under the lock (spec paths registered at start and
    /// reload); keep it short.
    pub fn update<R>(&self, change: impl FnOnce(&mut Inventory) -> R) -> R {
        let changed = change(&mut self.lock());
        self.changes.fetch_add(1, Ordering::Relaxed);
        changed
    }

    /// Runs `read` on the inventory under the lock: keep it short (copy out, format after).
    pub fn read<R>(&self, read: impl FnOnce(&Inventory) -> R) -> R {
        read(&self.lock())
    }

    /// Exchanges handed in since start.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// A number that moves whenever an endpoint counted something.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Per host: endpoints known and whether it is saturated, sorted by host.
    pub fn host_figures(&self) -> Vec<HostFigures> {
        self.read(|inventory| {
            inventory
                .hosts()
                .into_iter()
                .map(|(host, h)| HostFigures {
                    host: host.to_owned(),
                    endpoints: h.endpoint_count(),
                    saturated: h.is_saturated(),
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::InventoryConfig;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::time::Duration;

    fn answered(path: &str, status: u16) -> Exchange {
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut e = Exchange::new(1, client, "api.test", hyper::Method::GET, path);
        e.status = Some(status);
        e.upstream_latency = Some(Duration::from_millis(3));
        e
    }

    #[test]
    fn threads_share_one_inventory_and_the_counters_follow() {
        let shared = Arc::new(SharedInventory::new(Inventory::new(
            InventoryConfig::default(),
        )));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for i in 0..250 {
                        shared.record(&answered(&format!("/users/{}", t * 1000 + i), 200));
                    }
                    shared.record(&answered("/wp-admin", 404));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(shared.exchanges(), 1004);
        assert_eq!(shared.changes(), 1000);
        let figures = shared.host_figures();
        assert_eq!(
            figures,
            [HostFigures {
                host: "api.test".into(),
                endpoints: 1,
                saturated: false
            }]
        );
        let requests = shared.read(|i| i.host("api.test").unwrap().endpoints()[0].stats.requests);
        assert_eq!(requests, 1000);
    }
}
