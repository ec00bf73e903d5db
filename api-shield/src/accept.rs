//! The accept loop every TCP listener of the daemon shares (control aside): the gateway's,
//! the check endpoint's, the push API's and the metrics endpoint's.
//!
//! A bounded number of connections at once, and of them from one source (see [`slots`]: a
//! new one beyond is closed at accept, so a connection flood costs a file descriptor for an
//! instant, not a task, and one client cannot take every slot); accept errors (such
//! as running out of descriptors) back off instead of spinning; at shutdown the listener
//! closes first, every connection is told to finish (a watch channel each holds), and those
//! still busy after `grace` are dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub mod http;
pub mod slots;

use slots::{RefusalCounters, Slot, SlotLimits, Slots};

const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How one listener accepts.
pub struct Accept {
    /// Names the listener in logs, e.g. `"push API"`.
    pub what: &'static str,
    /// Connections served at once, in all and per source; may be shared by several sockets
    /// of one listener.
    pub slots: Arc<Slots>,
    /// How long connections may finish at shutdown.
    pub grace: Duration,
}

/// A connection's part of the shutdown: resolves once the listener stops.
pub type Stopping = watch::Receiver<bool>;

impl Accept {
    /// `limits` of its own, refusals counted in `refused`.
    pub fn new(
        what: &'static str,
        limits: SlotLimits,
        refused: RefusalCounters,
        grace: Duration,
    ) -> Self {
        Self {
            what,
            slots: Slots::new(limits, refused),
            grace,
        }
    }

    /// Accepts on `listener` until `shutdown` completes, running `connection` for each
    /// accepted stream (holding its slot until it returns).
    pub async fn serve<F, Fut>(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        mut connection: F,
    ) where
        F: FnMut(TcpStream, SocketAddr, Stopping) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let what = self.what;
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let slot = match self.slots.acquire(peer.ip()) {
                            Ok(slot) => slot,
                            Err(refusal) => {
                                // Counted in the listener's metrics; a log line per refused
                                // connection would be a flood of its own.
                                tracing::debug!(%peer, ?refusal, "{what}: no slot; closing a new connection");
                                continue;
                            }
                        };
                        let task = connection(stream, peer, stopping.clone());
                        connections.spawn(hold(slot, task));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "{what}: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "{what}: a connection task failed");
                    }
                }
            }
        }
        drop(listener);
        // Every connection holds a receiver, so sending cannot fail while any is alive, and
        // with none there is nobody to tell.
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = connections.len(),
                "{what}: dropping connections still busy at shutdown"
            );
        }
        connections.shutdown().await;
    }
}

async fn hold(_slot: Slot, task: impl Future<Output = ()>) {
    task.await;
}
