//! The accept loop every TCP listener of the daemon shares (control aside): the gateway's,
//! the check endpoint's, the push API's and the metrics endpoint's.
//!
//! A bounded number of connections at once (a new one beyond is closed at accept, so a
//! connection flood costs a file descriptor for an instant, not a task); accept errors (such
//! as running out of descriptors) back off instead of spinning; at shutdown the listener
//! closes first, every connection is told to finish (a watch channel each holds), and those
//! still busy after `grace` are dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How one listener accepts.
pub struct Accept {
    /// Names the listener in logs, e.g. `"push API"`.
    pub what: &'static str,
    /// Connections served at once; may be shared by several sockets of one listener.
    pub slots: Arc<Semaphore>,
    /// How long connections may finish at shutdown.
    pub grace: Duration,
}

/// A connection's part of the shutdown: resolves once the listener stops.
pub type Stopping = watch::Receiver<bool>;

impl Accept {
    pub fn new(what: &'static str, max_connections: usize, grace: Duration) -> Self {
        Self {
            what,
            slots: Arc::new(Semaphore::new(max_connections)),
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
                        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                            tracing::warn!(%peer, "{what}: too many connections; closing a new one");
                            continue;
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

async fn hold(_slot: OwnedSemaphorePermit, task: impl Future<Output = ()>) {
    task.await;
}
