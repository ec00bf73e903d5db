//! The gateway's password hashing pool: a few dedicated threads, at a lower CPU priority than
//! the serving threads, behind a bounded queue. Every transport (the TLS gateway's event
//! loops, the check endpoint) decides requests with [`decide`]: the engine does the cheap part
//! on the event loop and a password hash, when one is needed, runs here. When the queue is
//! full the request is answered 503 with `Retry-After` at once rather than queued without
//! bound: a flood of bad passwords then costs the serving threads a refusal each, and the
//! hashing threads at most their own share of the CPU.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::policy::{
    AccessDecision, Engine, Now, PasswordCheck, PasswordVerdict, RequestMeta, Step, password,
};

/// `Retry-After` of a 503 for a full queue: hashes take tens of milliseconds, so a second
/// is plenty for the queue to drain.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Nice value of the hashing threads (serving threads stay at 0): under contention the
/// scheduler gives them about a tenth of the CPU the serving threads get, so hashing slows
/// down before anyone else's requests do.
const HASHING_NICE: libc::c_int = 10;

struct Job {
    check: PasswordCheck,
    reply: oneshot::Sender<PasswordVerdict>,
}

/// The pool. Its threads end once every handle to it is gone.
pub struct PasswordPool {
    queue: SyncSender<Job>,
    workers: usize,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPool")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl PasswordPool {
    /// Starts `workers` hashing threads that take jobs from a queue of at most `queue`
    /// waiting checks.
    pub fn start(workers: usize, queue: usize) -> io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Arc::new(Self {
            queue: tx,
            workers: workers.max(1),
        }))
    }

    /// Runs `check` on the pool; `None` when the queue is full (nothing was hashed).
    pub async fn verify(&self, check: PasswordCheck) -> Option<PasswordVerdict> {
        let (reply, verdict) = oneshot::channel();
        match self.queue.try_send(Job { check, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return None,
        }
        // A worker drops the reply only by panicking: answered as a full pool, never a pass.
        verdict
            .await
            .inspect_err(|_| tracing::error!("a password hashing thread failed"))
            .ok()
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    // SAFETY: setpriority on this thread's own id (PRIO_PROCESS with a tid addresses one
    // thread on Linux) only lowers its priority, which needs no privilege and touches no memory.
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::id_t::try_from(libc::gettid()).unwrap_or_default(),
            HASHING_NICE,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "password pool: cannot lower the hashing threads' priority");
    }
    loop {
        // Holding the lock only while waiting for the next job: the hash runs unlocked.
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A client that went away while its check waited does not get one.
        if job.reply.is_closed() {
            continue;
        }
        let _ = job.reply.send(job.check.run());
    }
}

/// Decides `req` with `engine`, hashing a password (if one is needed) on `pool`. A full pool
/// gives 503 with `Retry-After`.
pub async fn decide(engine: &Engine, pool: &PasswordPool, req: &RequestMeta) -> AccessDecision {
    match engine.begin(req, Now::system()) {
        Step::Decided(d) => d,
        Step::Password(check) => {
            let route = check.route().map(str::to_owned);
            match pool.verify(check).await {
                Some(verdict) => engine.finish(req, verdict, Now::system()),
                None => password::unavailable(route, RETRY_AFTER),
            }
        }
    }
}
