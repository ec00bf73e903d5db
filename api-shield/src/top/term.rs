//! The terminal loop: readings come from a thread of their own, so a slow daemon never makes
//! the keys wait; the screen is redrawn on each reading, key and resize.

use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::view::{Model, Sample};
use super::{Key, Poller, Ui, render};
use crate::kernel::clock;

/// How often keys are looked for while nothing happens.
const KEY_POLL: Duration = Duration::from_millis(100);

fn key_of(code: KeyCode, modifiers: KeyModifiers) -> Key {
    match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('q' | 'Q') | KeyCode::Esc => Key::Quit,
        KeyCode::Char('p' | 'P' | ' ') => Key::Pause,
        KeyCode::Char('s' | 'S') => Key::Sort,
        _ => Key::Other,
    }
}

pub fn run(mut poller: Poller, mut model: Model, mut ui: Ui) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Result<Sample, super::PollError>, Instant, u64)>();
    let interval = ui.interval;
    // Ends when the receiver is gone, at the first send after the view closed.
    thread::spawn(move || {
        loop {
            thread::sleep(interval);
            let sample = poller.poll();
            if tx
                .send((sample, Instant::now(), clock::now_unix_ms()))
                .is_err()
            {
                break;
            }
        }
    });

    let mut terminal = ratatui::try_init()?;
    let result = (|| -> io::Result<()> {
        let mut dirty = true;
        loop {
            for (sample, at, now_ms) in rx.try_iter() {
                // While paused the view stays as it was; the next reading after it resumes
                // gives rates over the whole pause.
                if !ui.paused {
                    match sample {
                        Ok(s) => model.apply(s, at, now_ms),
                        Err(e) => model.failed(e.to_string()),
                    }
                    dirty = true;
                }
            }
            if dirty {
                terminal.draw(|f| render::draw(f, &model, &ui))?;
                dirty = false;
            }
            if event::poll(KEY_POLL)? {
                match event::read()? {
                    Event::Key(k) if k.kind == KeyEventKind::Press => {
                        if ui.on_key(key_of(k.code, k.modifiers)) {
                            return Ok(());
                        }
                        dirty = true;
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let none = KeyModifiers::NONE;
        assert_eq!(key_of(KeyCode::Char('q'), none), Key::Quit);
        assert_eq!(key_of(KeyCode::Esc, none), Key::Quit);
        assert_eq!(key_of(KeyCode::Char('c'), KeyModifiers::CONTROL), Key::Quit);
        assert_eq!(key_of(KeyCode::Char('c'), none), Key::Other);
        assert_eq!(key_of(KeyCode::Char('p'), none), Key::Pause);
        assert_eq!(key_of(KeyCode::Char('s'), none), Key::Sort);
    }
}
