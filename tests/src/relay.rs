//! A TCP relay from inside a lab namespace to a service of the host's own namespace: a daemon
//! running in the lab's server namespace cannot reach the host's loopback, where helpers such
//! as the CrowdSec local API listen. The listening socket is created inside the namespace, the
//! outbound connections from the host's: a socket keeps the namespace it was created in,
//! whichever thread uses it.
//!
//! Bounded: the relay stops when dropped or after [`RELAY_LIFETIME`], and each relayed
//! connection ends after [`IDLE_TIMEOUT`] without a byte.

use crate::netns::in_netns;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest a relay runs even if nobody stops it.
pub const RELAY_LIFETIME: Duration = Duration::from_secs(180);
/// A relayed connection without a byte either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop checks whether it must stop.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Relays connections made to `listen` in a namespace to `target` in the host's.
pub struct TcpRelay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Listens on `listen` inside `netns` and forwards each connection to `target`.
    pub fn start(netns: &str, listen: SocketAddr, target: SocketAddr) -> TcpRelay {
        let listener = in_netns(netns, move || TcpListener::bind(listen))
            .join()
            .expect("relay bind thread")
            .unwrap_or_else(|e| panic!("relay: bind {listen}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || accept_loop(&listener, target, &flag));
        TcpRelay {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool) {
    let deadline = Instant::now() + RELAY_LIFETIME;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match listener.accept() {
            Ok((inbound, _)) => {
                if let Err(e) = relay(inbound, target) {
                    eprintln!("relay to {target}: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                eprintln!("relay: accept: {e}");
                return;
            }
        }
    }
}

/// Copies both ways on two threads until either side closes or goes idle.
fn relay(inbound: TcpStream, target: SocketAddr) -> io::Result<()> {
    inbound.set_nonblocking(false)?;
    let outbound = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    for s in [&inbound, &outbound] {
        s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    }
    let (in_read, out_write) = (inbound.try_clone()?, outbound.try_clone()?);
    thread::spawn(move || pipe(in_read, out_write));
    thread::spawn(move || pipe(outbound, inbound));
    Ok(())
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
