//! A stand-in for a hostile or compromised CrowdSec local API: it answers every
//! `startup=true` stream request with a body the test chose (a real CrowdSec cannot be made
//! to send junk) and every delta request with an empty answer.
//!
//! It listens inside a lab namespace, where the daemon under test runs. The first startup
//! request is held until [`StandIn::release`], so a test can read the daemon's memory before
//! the answer arrives. Bounded: it stops when dropped or after [`STANDIN_LIFETIME`].

use crate::netns::in_netns;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest the stand-in runs even if nobody stops it.
pub const STANDIN_LIFETIME: Duration = Duration::from_secs(120);
/// How often the accept loop and a held request check whether to go on.
const POLL: Duration = Duration::from_millis(20);
/// A request head larger than this is not the bouncer's.
const MAX_HEAD: usize = 16 << 10;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const EMPTY_DELTA: &str = r#"{"deleted":null,"new":null}"#;

struct Shared {
    stop: AtomicBool,
    released: AtomicBool,
    /// Request lines seen, in order.
    requests: Mutex<Vec<String>>,
}

/// The stand-in's server thread; stopped and joined on drop.
pub struct StandIn {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Listens on `listen` inside `netns`; `startup_body` is the answer to startup requests.
    pub fn start(netns: &str, listen: SocketAddr, startup_body: Arc<Vec<u8>>) -> StandIn {
        let listener = in_netns(netns, move || TcpListener::bind(listen))
            .join()
            .expect("stand-in bind thread")
            .unwrap_or_else(|e| panic!("stand-in: bind {listen}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            released: AtomicBool::new(false),
            requests: Mutex::default(),
        });
        let state = Arc::clone(&shared);
        let thread = thread::spawn(move || serve(&listener, &startup_body, &state));
        StandIn {
            shared,
            thread: Some(thread),
        }
    }

    /// Request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lets the held startup request (and all later ones) be answered.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.released.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, startup_body: &[u8], shared: &Shared) {
    let end = Instant::now() + STANDIN_LIFETIME;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < end {
        match listener.accept() {
            Ok((conn, _)) => {
                // One connection at a time: the bouncer makes one request per round.
                if let Err(e) = answer(conn, startup_body, shared) {
                    eprintln!("stand-in: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => {
                eprintln!("stand-in: accept: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

/// Answers the requests of one connection (the client may keep it alive).
fn answer(mut conn: TcpStream, startup_body: &[u8], shared: &Shared) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    loop {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf)?;
            if n == 0 || shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                return Err(std::io::Error::other("request head too large"));
            }
        }
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let startup = line.contains("startup=true");
        shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
        while !shared.released.load(Ordering::SeqCst) {
            thread::sleep(POLL);
        }
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let body = if startup {
            startup_body
        } else {
            EMPTY_DELTA.as_bytes()
        };
        let reply_head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(reply_head.as_bytes())?;
        conn.write_all(body)?;
    }
}
