//! The TLS-terminating gateway: listeners that accept client connections (TLS with ALPN `h2`
//! / `http/1.1`, or plain HTTP behind a load balancer, optionally after a PROXY protocol v2
//! header from a trusted proxy), decide each request with the policy engine and forward what
//! it allows to the route's upstream over pooled HTTP/1.1 keep-alive connections.
//!
//! Bounds on every client: the TLS handshake, PROXY header and each request head within
//! `timeouts.header`; the body within `timeouts.body` and `limits.max_body_bytes`; a
//! connection moving no byte for `timeouts.idle` is closed; at most `limits.max_connections`
//! per listener, and `max_connections_per_source` of them from one source; while a listener
//! has 80% of its slots taken, a connection with no request in flight is closed once silent
//! for `timeouts.header`. Upstream: connect within `timeouts.upstream_connect`, response head within
//! `timeouts.upstream_response` (504 otherwise, 502 when it fails).

pub mod body;
pub mod forward;
pub mod idle;
pub mod proxy_v2;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod validation;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::Escalator;
use super::config::ListenerConfig;
use super::live::SharedLive;
use super::metrics::GatewayMetrics;
use super::observe::Recorder;
use super::password_pool::PasswordPool;
use crate::accept::Accept;
use crate::accept::http::{Ended, drive, tls_handshake};
use crate::accept::slots::{SlotLimits, Slots};
use idle::{Activity, IdleIo};
use upstream::UpstreamClient;

/// Names the listener in logs.
const WHAT: &str = "gateway";
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything a request handler needs.
pub struct ProxyShared {
    pub live: SharedLive,
    pub client: UpstreamClient,
    pub escalator: Arc<dyn Escalator>,
    pub metrics: Arc<GatewayMetrics>,
    pub passwords: Arc<PasswordPool>,
    /// Where answered requests are recorded (the daemon's inventory).
    pub recorder: Recorder,
}

/// One listener's sockets, one per serving thread (SO_REUSEPORT: the kernel spreads new
/// connections over them), bound and not yet serving.
#[derive(Debug)]
pub struct ProxyListener {
    sockets: Vec<std::net::TcpListener>,
    cfg: ListenerConfig,
}

/// Pending connections the kernel queues per socket.
const BACKLOG: i32 = 1024;

fn reuseport_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds `threads` sockets for every listener of `listeners`; the first that cannot be bound
/// fails the whole.
pub fn bind(listeners: &[ListenerConfig], threads: usize) -> io::Result<Vec<ProxyListener>> {
    let mut bound = Vec::with_capacity(listeners.len());
    for l in listeners {
        let err = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("binding gateway listener {}: {e}", l.listen),
            )
        };
        let first = reuseport_socket(l.listen).map_err(err)?;
        // Port 0 picks a port: the other sockets join the one the first got.
        let addr = first.local_addr().map_err(err)?;
        let mut sockets = vec![first];
        for _ in 1..threads.max(1) {
            sockets.push(reuseport_socket(addr).map_err(err)?);
        }
        bound.push(ProxyListener {
            sockets,
            cfg: l.clone(),
        });
    }
    Ok(bound)
}

/// What a request handler knows of its connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client a trusted proxy named in a PROXY protocol header.
    pub proxied_client: Option<IpAddr>,
    pub tls: bool,
}

impl ProxyListener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sockets
            .first()
            .ok_or_else(|| io::Error::other("no socket"))?
            .local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.cfg.tls_cert.is_some()
    }
}

/// What every serving thread shares.
pub struct Serving {
    pub live: SharedLive,
    pub escalator: Arc<dyn Escalator>,
    pub metrics: Arc<GatewayMetrics>,
    pub passwords: Arc<PasswordPool>,
    pub recorder: Recorder,
}

/// Starts one thread per socket of the listeners (as many as `bind` was given), each with its
/// own single-threaded event loop and its own upstream pool, so a request is accepted,
/// decided, forwarded and answered on one thread without waking another (the cross-thread
/// wake-ups of a shared work-stealing runtime were a large part of the gateway's CPU per
/// request). They serve until `stop` turns true, then let requests in flight finish.
pub fn spawn_threads(
    listeners: Vec<ProxyListener>,
    serving: &Serving,
    stop: &watch::Receiver<bool>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let threads = listeners.iter().map(|l| l.sockets.len()).max().unwrap_or(0);
    let mut per_thread: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let live = serving.live.load_full();
    let max = live.cfg.limits.max_connections;
    // Sources grouped as the policy's limiter groups them.
    let v6_prefix = live.engine.config().limiter.ipv6_prefix;
    for l in listeners {
        let tls_at_start = serving
            .live
            .load()
            .acceptors
            .get(&l.cfg.listen)
            .cloned()
            .flatten();
        let cfg = Arc::new(Bound {
            cfg: l.cfg,
            tls_at_start,
        });
        // One connection budget per listener, whichever thread accepts.
        let slots = Slots::new(
            SlotLimits {
                max,
                per_source: cfg.cfg.max_connections_per_source,
                v6_prefix,
                exempt: live.cfg.trusted_proxies.clone(),
            },
            serving
                .metrics
                .refusal_counters(&cfg.cfg.listen.to_string()),
        );
        for (i, socket) in l.sockets.into_iter().enumerate() {
            per_thread[i].push((socket, Arc::clone(&cfg), Arc::clone(&slots)));
        }
    }
    let mut handles = Vec::with_capacity(threads);
    for (i, sockets) in per_thread.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("gateway-{i}"))
            .build()?;
        let shared = Arc::new(ProxyShared {
            live: Arc::clone(&serving.live),
            client: upstream::client(&serving.live.load().cfg),
            escalator: Arc::clone(&serving.escalator),
            metrics: Arc::clone(&serving.metrics),
            passwords: Arc::clone(&serving.passwords),
            recorder: serving.recorder.clone(),
        });
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("gateway-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut serving = JoinSet::new();
                    for (socket, cfg, slots) in sockets {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => {
                                let mut stop = stop.clone();
                                let shutdown = async move {
                                    let _ = stop.wait_for(|s| *s).await;
                                };
                                serving.spawn(serve(
                                    listener,
                                    cfg,
                                    slots,
                                    Arc::clone(&shared),
                                    shutdown,
                                ));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "gateway: cannot serve a listener socket");
                            }
                        }
                    }
                    while serving.join_next().await.is_some() {}
                });
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// A listener as bound at start: its address, TLS on or off and PROXY setting stay as they
/// were (a reload changes certificates, not whether a port speaks TLS).
struct Bound {
    cfg: ListenerConfig,
    tls_at_start: Option<TlsAcceptor>,
}

/// Serves one socket until `shutdown`, then lets requests in flight finish for a while.
async fn serve(
    listener: TcpListener,
    bound: Arc<Bound>,
    slots: Arc<Slots>,
    shared: Arc<ProxyShared>,
    shutdown: impl Future<Output = ()>,
) {
    let scarce = slots.scarce();
    let accept = Accept {
        what: WHAT,
        slots,
        grace: SHUTDOWN_GRACE,
    };
    accept
        .serve(listener, shutdown, |stream, peer, stopping| {
            let _ = stream.set_nodelay(true);
            let ends = Ends {
                stopping,
                scarce: scarce.clone(),
            };
            connection(stream, peer, Arc::clone(&bound), Arc::clone(&shared), ends)
        })
        .await;
}

/// What can end a connection early: the listener stopping, or running short of slots.
struct Ends {
    stopping: watch::Receiver<bool>,
    scarce: watch::Receiver<bool>,
}

/// Which HTTP versions a connection may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Versions {
    Http1,
    Http2,
    /// Plain listeners with HTTP/2 on: told apart by the h2 preface.
    Either,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    bound: Arc<Bound>,
    shared: Arc<ProxyShared>,
    ends: Ends,
) {
    let cfg = &bound.cfg;
    let live = shared.live.load_full();
    let header_timeout = live.cfg.timeouts.header;
    let mut proxied_client = None;
    if cfg.proxy_protocol && live.cfg.trusts(peer.ip()) {
        match timeout(header_timeout, proxy_v2::read(&mut stream)).await {
            Ok(Ok(proxy_v2::Origin::Client(a))) => proxied_client = Some(a.ip().to_canonical()),
            Ok(Ok(proxy_v2::Origin::Local)) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "gateway: bad PROXY header; closing");
                return;
            }
            Err(_) => return,
        }
    }
    // The reloaded certificate when there is one for this address, else the one it started
    // with; a plain listener never starts speaking TLS, nor a TLS one plain text.
    let acceptor = if bound.tls_at_start.is_some() {
        live.acceptors
            .get(&cfg.listen)
            .cloned()
            .flatten()
            .or_else(|| bound.tls_at_start.clone())
    } else {
        None
    };
    let info = ConnInfo {
        peer,
        proxied_client,
        tls: acceptor.is_some(),
    };
    match acceptor {
        Some(acceptor) => {
            let Some(tls) = tls_handshake(&acceptor, stream, header_timeout, WHAT, peer).await
            else {
                return;
            };
            let versions = if tls.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2) {
                Versions::Http2
            } else {
                Versions::Http1
            };
            serve_http(tls, info, versions, shared, ends).await;
        }
        None => {
            let versions = if cfg.http2 {
                Versions::Either
            } else {
                Versions::Http1
            };
            serve_http(stream, info, versions, shared, ends).await;
        }
    }
}

async fn serve_http<T>(
    io: T,
    info: ConnInfo,
    versions: Versions,
    shared: Arc<ProxyShared>,
    ends: Ends,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let live = shared.live.load_full();
    let (t, limits) = (&live.cfg.timeouts, &live.cfg.limits);
    let (idle_limit, header_limit) = (t.idle, t.header);
    let Ends {
        mut stopping,
        scarce,
    } = ends;
    let activity = Activity::default();
    let io = IdleIo::new(io, activity.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_h2_streams);
    let builder = match versions {
        Versions::Http1 => builder.http1_only(),
        Versions::Http2 => builder.http2_only(),
        Versions::Either => builder,
    };
    let handler = Arc::clone(&shared);
    let (tunnels, mut tunnel) = upgrade::tunnels();
    let requests = activity.clone();
    let service = service_fn(move |mut req: hyper::Request<_>| {
        if req.version() == hyper::Version::HTTP_11 {
            req.extensions_mut().insert(tunnels.clone());
        }
        let busy = requests.busy();
        let handled = forward::handle(req, info, Arc::clone(&handler));
        async move {
            let response = handled.await;
            drop(busy);
            response
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let idle = async {
        activity
            .idle_or_scarce(idle_limit, header_limit, scarce)
            .await;
        tracing::debug!(peer = %info.peer, "gateway: idle connection closed");
    };
    if drive(conn, &mut stopping, idle, WHAT, info.peer).await != Ended::Closed {
        return;
    }
    // An upgraded connection goes on as a tunnel, still this connection: its slot, its idle
    // timeout (the client side is still `IdleIo`), and the shutdown end it.
    if let Ok(tunnel) = tunnel.try_recv() {
        tokio::select! {
            () = tunnel => {}
            () = activity.idle(idle_limit) => {
                tracing::debug!(peer = %info.peer, "gateway: idle WebSocket closed");
            }
            true = async { stopping.wait_for(|stop| *stop).await.is_ok() } => {
                tracing::debug!(peer = %info.peer, "gateway: WebSocket closed at shutdown");
            }
        }
    }
}
