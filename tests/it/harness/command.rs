//! The one command runner for the external tools the tests drive (skopeo, podman, curl,
//! openssl, nginx, python, systemd tools, kill). A missing tool fails the test with a hint, it
//! is never skipped; a failing command panics with its command line, exit status and the tail of
//! its stdout and stderr, plus whatever the caller adds (usually pier's log).

use std::process::{Command, Output};

use super::daemon::Pier;

/// How much of a failed command's stdout/stderr a panic message shows (the end, where the error
/// usually is).
const TAIL_BYTES: usize = 6000;

/// Runs `cmd` to completion and returns its output whatever its exit status; panics only when it
/// cannot be started.
#[track_caller]
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)"));
    // `timeout`, `env` and friends report a missing program as exit code 127.
    if out.status.code() == Some(127) && String::from_utf8_lossy(&out.stderr).contains("failed to run command") {
        panic!("cannot run {cmd:?}: {} (is it installed?)", String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// Runs a command that must succeed; returns its stdout.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    run_or_explain(cmd, String::new)
}

/// Like [`run`], with `more()` appended to the panic message when the command fails.
#[track_caller]
pub fn run_or_explain(cmd: &mut Command, more: impl FnOnce() -> String) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!("{}{}", describe_failure(cmd, &out), more());
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`run`], with the tail of pier's log in the panic message.
#[track_caller]
pub fn run_logged(p: &Pier, cmd: &mut Command) -> String {
    run_or_explain(cmd, || format!("\n--- pier log (tail) ---\n{}", p.log_tail()))
}

/// `CMD failed (STATUS):` and the tails of stdout and stderr.
pub fn describe_failure(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} failed ({}):\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout)),
        tail(&String::from_utf8_lossy(&out.stderr))
    )
}

/// The last [`TAIL_BYTES`] of `s` (cut at a character boundary).
pub fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(TAIL_BYTES);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
