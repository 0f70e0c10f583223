//! The progress display of long commands (`pier export`, `pier import`): what a user sees on
//! stderr while bytes move.
//!
//! Three modes, chosen once by [`ProgressDisplay::new`]:
//! - **bar**, when stderr is a terminal: an `indicatif` bar with the bytes done, the total when
//!   known, the rate and the ETA; item lines are printed above it.
//! - **lines**, when stderr is not a terminal (logs, CI): one line per item (e.g. per image) and
//!   nothing else; byte counts are not printed.
//! - **silent**, with `--json`: nothing at all (the summary on stdout is the whole output).
//!
//! A daemon's progress events map onto it with [`ProgressDisplay::event`]: an event with byte
//! counts moves the bar (its message names the phase), one without is an item line. The display
//! is cheap to clone and may be shared by threads (the thread reading a pipe counts bytes, the
//! one reading the daemon's answer reports items).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::admin::client::Progress;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Silent,
}

/// The progress display of one command; see the module documentation.
#[derive(Clone)]
pub struct ProgressDisplay {
    command: &'static str,
    mode: Mode,
    /// Present in [`Mode::Bar`] only.
    bar: Option<ProgressBar>,
}

const BAR_TEMPLATE: &str = "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {bytes} {binary_bytes_per_sec}";

impl ProgressDisplay {
    /// The display for `command` (named in item lines): silent with `json`, a bar when stderr
    /// is a terminal, lines otherwise.
    pub fn new(command: &'static str, json: bool) -> ProgressDisplay {
        let mode = if json {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        ProgressDisplay::with_mode(command, mode)
    }

    /// The display in a given mode.
    pub fn with_mode(command: &'static str, mode: Mode) -> ProgressDisplay {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(SPINNER_TEMPLATE) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        ProgressDisplay { command, mode, bar }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The total number of bytes, once known: the bar shows how far along it is and an ETA.
    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length().is_none() {
                if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                    bar.set_style(style.progress_chars("=> "));
                }
            }
            bar.set_length(total);
        }
    }

    /// `bytes` more are done.
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// `done` bytes are done in all.
    pub fn set_done(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// The phase the command is in (the bar's message; not printed in the other modes).
    pub fn phase(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
        }
    }

    /// One item done (an image, a file): a line above the bar, or on stderr.
    pub fn item(&self, message: &str) {
        match (&self.mode, &self.bar) {
            (Mode::Bar, Some(bar)) => bar.println(format!("pier {}: {message}", self.command)),
            (Mode::Lines, _) | (Mode::Bar, None) => eprintln!("pier {}: {message}", self.command),
            (Mode::Silent, _) => {}
        }
    }

    /// A daemon's progress event: with byte counts it moves the bar (message = phase), without
    /// it is an item.
    pub fn event(&self, progress: &Progress) {
        if progress.done.is_none() && progress.total.is_none() {
            self.item(&progress.message);
            return;
        }
        if let Some(total) = progress.total {
            self.set_total(total);
        }
        if let Some(done) = progress.done {
            self.set_done(done);
        }
        self.phase(&progress.message);
    }

    /// The work is over: the bar is removed (the command prints its summary after).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
