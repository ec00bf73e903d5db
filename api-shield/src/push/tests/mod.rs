//! The push API end to end: a real listener on loopback, a hand-written HTTP client and an
//! in-memory backend.

mod api;
mod client;
mod fake;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::client::Client;
use self::fake::FakeBackend;
use super::{PushConfig, PushError, Token, bind};

pub(super) const TOKEN: &str = "test-token-0123456789abcdef";

struct Server {
    addr: SocketAddr,
    backend: Arc<FakeBackend>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), PushError>>,
}

impl Server {
    /// Serves `cfg` on an ephemeral loopback port.
    async fn start(cfg: PushConfig) -> Self {
        let cfg = PushConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..cfg
        };
        let listener = bind(&cfg).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(FakeBackend::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve(
            Token::new(TOKEN.to_owned()).unwrap(),
            Arc::clone(&backend) as _,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            backend,
            stop,
            task,
        }
    }

    async fn plain() -> Self {
        Self::start(PushConfig::default()).await
    }

    fn client(&self) -> Client {
        Client::plain(self.addr)
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}
