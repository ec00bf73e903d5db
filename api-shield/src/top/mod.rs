//! `api-shield top`: a live view over the control socket. It asks the daemon for `stats`,
//! `lists` and `list blocked` about once a second and shows packets per second by verdict with
//! short histories, drops per list and feed health, the kernel's auto-blocked offenders and the
//! latest blocks. Keys: `q` quits, `p` pauses, `s` cycles the offenders' sort order.
//! With `--plain`, or when stdout is not a terminal, it prints plain text at each refresh.

pub mod render;
mod term;
pub mod view;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::{self, ListedBody, Request, Response};
use crate::kernel::clock;
use crate::model::Action;
use view::{Model, Sample};

/// Shortest refresh interval accepted: the daemon's work per reading is not free.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Above this many blocks, the full list is read every `FULL_LIST_EVERY`-th refresh only (the
/// kernel's auto-blocks still every time).
const LARGE_LIST: usize = 5_000;
const FULL_LIST_EVERY: u64 = 10;
/// `status` (interface, modes) changes rarely.
const STATUS_EVERY: u64 = 10;

/// How the offenders are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Most recently blocked first.
    Newest,
    /// Soonest to expire first.
    Expiry,
    /// By address.
    Source,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Newest => Sort::Expiry,
            Sort::Expiry => Sort::Source,
            Sort::Source => Sort::Newest,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Newest => "newest",
            Sort::Expiry => "expiry",
            Sort::Source => "source",
        }
    }
}

/// What the user controls.
#[derive(Clone, Debug)]
pub struct Ui {
    pub paused: bool,
    pub sort: Sort,
    pub interval: Duration,
}

/// What a key press asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Quit,
    Pause,
    Sort,
    Other,
}

impl Ui {
    /// Applies a key; returns whether to quit.
    pub fn on_key(&mut self, key: Key) -> bool {
        match key {
            Key::Quit => return true,
            Key::Pause => self.paused = !self.paused,
            Key::Sort => self.sort = self.sort.next(),
            Key::Other => {}
        }
        false
    }
}

pub struct TopOptions {
    pub socket: PathBuf,
    pub plain: bool,
    pub interval: Duration,
    /// Stop after this many refreshes (plain output only).
    pub iterations: Option<u64>,
}

/// Reads the daemon, keeping track of when the large requests are due.
pub struct Poller {
    socket: PathBuf,
    tick: u64,
    large: bool,
}

/// Why a reading of the daemon failed; `top` shows it and keeps what it showed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The daemon answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The daemon could not be asked.
    #[error(transparent)]
    Socket(#[from] control::ClientError),
}

fn ask(socket: &Path, req: &Request) -> Result<Value, PollError> {
    match control::request(socket, req)? {
        Response::Ok { body } => Ok(body),
        Response::Error { message, .. } => Err(PollError::Refused(message)),
    }
}

/// The typed answer to `req`. An answer of another shape (a newer daemon) reads as empty, so
/// `top` keeps showing what it can read; fields missing from an answer keep their defaults.
fn ask_typed<T: DeserializeOwned + Default>(socket: &Path, req: &Request) -> Result<T, PollError> {
    Ok(serde_json::from_value(ask(socket, req)?).unwrap_or_default())
}

impl Poller {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            tick: 0,
            large: false,
        }
    }

    /// One reading of the daemon.
    pub fn poll(&mut self) -> Result<Sample, PollError> {
        let tick = self.tick;
        self.tick += 1;
        let socket = &self.socket;
        let status = if tick.is_multiple_of(STATUS_EVERY) {
            Some(ask(socket, &Request::Status)?)
        } else {
            None
        };
        let stats = ask_typed(socket, &Request::Stats)?;
        let lists = ask_typed(socket, &Request::Lists)?;
        let full_blocked = !self.large || tick.is_multiple_of(FULL_LIST_EVERY);
        let blocked: Vec<ListedBody> = ask_typed(
            socket,
            &Request::List {
                action: Some(Action::Block),
                origin: (!full_blocked).then(|| crate::model::ORIGIN_KERNEL_NAME.into()),
            },
        )?;
        if full_blocked {
            self.large = blocked.len() > LARGE_LIST;
        }
        Ok(Sample {
            status,
            stats,
            lists,
            blocked,
            full_blocked,
        })
    }
}

pub fn run(opts: TopOptions) -> ExitCode {
    let interval = opts.interval.max(MIN_INTERVAL);
    let mut poller = Poller::new(opts.socket.clone());
    // The first reading must work: a wrong socket or missing permission is reported at once.
    let first = match poller.poll() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("api-shield: {e}");
            return ExitCode::from(control::protocol::EXIT_INTERNAL);
        }
    };
    let mut model = Model::new();
    model.apply(first, Instant::now(), clock::now_unix_ms());
    let ui = Ui {
        paused: false,
        sort: Sort::Newest,
        interval,
    };
    if opts.plain || opts.iterations.is_some() || !std::io::stdout().is_terminal() {
        plain_loop(poller, model, &ui, opts.iterations)
    } else {
        match term::run(poller, model, ui) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("api-shield: terminal: {e}");
                ExitCode::from(control::protocol::EXIT_INTERNAL)
            }
        }
    }
}

/// Prints a block of text per refresh; the first has no rates yet, so with a count of one it
/// waits an interval and prints the second reading.
fn plain_loop(mut poller: Poller, mut model: Model, ui: &Ui, iterations: Option<u64>) -> ExitCode {
    let mut printed = 0;
    loop {
        std::thread::sleep(ui.interval);
        match poller.poll() {
            Ok(sample) => model.apply(sample, Instant::now(), clock::now_unix_ms()),
            Err(e) => model.failed(e.to_string()),
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{}", render::plain(&model, ui))
            .and_then(|()| out.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): nothing left to do.
            return ExitCode::SUCCESS;
        }
        printed += 1;
        if iterations.is_some_and(|n| printed >= n) {
            return if model.error.is_some() {
                ExitCode::from(control::protocol::EXIT_INTERNAL)
            } else {
                ExitCode::SUCCESS
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pause_sort_and_quit() {
        let mut ui = Ui {
            paused: false,
            sort: Sort::Newest,
            interval: Duration::from_secs(1),
        };
        assert!(!ui.on_key(Key::Pause));
        assert!(ui.paused);
        assert!(!ui.on_key(Key::Pause));
        assert!(!ui.paused);
        let sorts: Vec<Sort> = (0..3)
            .map(|_| {
                ui.on_key(Key::Sort);
                ui.sort
            })
            .collect();
        assert_eq!(sorts, [Sort::Expiry, Sort::Source, Sort::Newest]);
        assert!(!ui.on_key(Key::Other));
        assert!(ui.on_key(Key::Quit));
    }
}
