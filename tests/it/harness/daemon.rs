//! The one launcher for the real `pier` binary: [`Pier`] owns a temporary directory holding the
//! data directory, the generated config and the log file, and at most one running process using
//! them.
//!
//! Invariants: every run's stderr is appended to `log_path` (a file, so a test can point
//! `JOURNAL_STREAM` at its inode), and [`Pier::run_log`] is the current run's part of it; `addr`
//! is where requests go (the first `listening on` address of the current run unless the test set
//! it); dropping a `Pier` kills its process.
//!
//! Variants are options, not other types: [`Options`] (config YAML, environment, extra
//! arguments, a fixed listen address), [`Pier::socket_activation_command`] (or any other
//! wrapper) run by [`Pier::spawn_cmd`], and per-run environment (e.g. `NOTIFY_SOCKET`) on
//! [`Pier::spawn`]/[`Pier::serve`]. Stopping: [`Pier::kill9`] (no chance to clean up),
//! [`Pier::stop`] (SIGTERM, must exit 0), [`Pier::signal`] for anything else.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::{try_request, Response};

pub const PIER: &str = env!("CARGO_BIN_EXE_pier");

/// How long a start may take before the test fails (generous: four agents share two cores).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What goes into the generated config and the command line.
#[derive(Default, Clone)]
pub struct Options {
    pub delete_enabled: bool,
    /// `http.addr`; empty means `127.0.0.1:0` (an ephemeral port).
    pub listen: String,
    /// YAML appended right after `http:\n  addr: …\n`: indented lines are more `http` keys, the
    /// rest top-level sections.
    pub extra_yaml: String,
    /// Environment for every run.
    pub env: Vec<(String, String)>,
    /// Arguments after `serve --config CONFIG`.
    pub args: Vec<String>,
}

/// One data directory and config, and at most one running `pier` using them.
pub struct Pier {
    pub child: Option<Child>,
    /// Where requests go: the current run's first `listening on` address, or set by the test.
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub config: PathBuf,
    /// Every run's stderr, appended.
    pub log_path: PathBuf,
    pub opts: Options,
    /// Holds `root`, `config` and `log_path`; a test may put more files here.
    pub dir: tempfile::TempDir,
    log_offset: usize,
}

impl Pier {
    /// A running pier with deletes enabled and nothing else configured.
    pub fn start() -> Pier {
        Self::start_with(Options { delete_enabled: true, ..Default::default() })
    }

    /// A running pier configured by `opts`.
    pub fn start_with(opts: Options) -> Pier {
        let mut p = Pier::new(opts);
        p.serve(&[]);
        p
    }

    /// A data directory and config for `opts`; nothing runs yet.
    pub fn new(opts: Options) -> Pier {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Pier {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            root: dir.path().join("data"),
            config: dir.path().join("config.yml"),
            log_path: dir.path().join("stderr.log"),
            opts,
            dir,
            log_offset: 0,
        };
        p.write_config();
        p
    }

    /// (Re)writes the config file from `opts` (after a test changed them).
    pub fn write_config(&self) {
        let listen = if self.opts.listen.is_empty() { "127.0.0.1:0" } else { &self.opts.listen };
        let text = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {}\nhttp:\n  addr: {listen}\n{}",
            self.root.display(),
            self.opts.delete_enabled,
            self.opts.extra_yaml
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// `pier serve --config CONFIG ARGS...` with the environment of `opts`.
    pub fn serve_command(&self) -> Command {
        let mut c = Command::new(PIER);
        c.arg("serve").arg("--config").arg(&self.config).args(&self.opts.args);
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    /// `systemd-socket-activate -l ADDR... [--fdname=NAMES] PIER serve --config CONFIG ARGS...`
    /// (the systemd tool, with the environment of `opts`): it listens itself, and on the first
    /// connection execs pier in the same process with `LISTEN_FDS`, `LISTEN_PID` and
    /// `LISTEN_FDNAMES` set and the sockets as fds 3, 4, ... Run it with [`Pier::spawn_cmd`].
    pub fn socket_activation_command(&self, addrs: &[SocketAddr], fdnames: Option<&str>) -> Command {
        let mut cmd = Command::new("systemd-socket-activate");
        for a in addrs {
            cmd.arg("-l").arg(a.to_string());
        }
        if let Some(n) = fdnames {
            cmd.arg(format!("--fdname={n}"));
        }
        cmd.arg(PIER).arg("serve").arg("--config").arg(&self.config).args(&self.opts.args);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns `cmd` with stdin and stdout on /dev/null and stderr appended to the log file.
    pub fn spawn_cmd(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "already running");
        let log = OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open log file");
        self.log_offset = log.metadata().unwrap().len() as usize;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)"));
        self.child = Some(child);
    }

    /// Spawns `pier serve` with `env` added for this run; does not wait for anything.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.serve_command();
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn_cmd(cmd);
    }

    /// Spawns `pier serve` (with `env` added for this run) and waits until it logged where it
    /// listens; returns that address.
    pub fn serve(&mut self, env: &[(&str, &str)]) -> SocketAddr {
        self.spawn(env);
        self.wait_listening(1)[0]
    }

    /// SIGKILL, then `serve` again on the same data directory and config, and wait until the
    /// consistency walk (which pier runs in the background once it serves) is over, so that the
    /// test sees the store as recovery leaves it.
    pub fn restart(&mut self) {
        self.kill9();
        self.serve(&[]);
        self.wait_walked();
    }

    /// Waits until the current run logged the end of its consistency walk (`store::recovery`).
    #[track_caller]
    pub fn wait_walked(&self) {
        self.wait_log("consistency walk:", START_TIMEOUT);
    }

    /// Spawns `pier serve` expecting it to refuse to start: waits for it to exit, asserts it
    /// failed without ever listening, and returns what it wrote to stderr.
    pub fn expect_refusal(&mut self, what: &str) -> String {
        self.spawn(&[]);
        let (st, _) = self.expect_exit(Duration::from_secs(20), &format!("after starting with {what}"));
        let log = self.run_log();
        assert!(!st.success(), "pier exited successfully ({st}) with {what}; stderr:\n{log}");
        assert!(!log.contains("listening on"), "pier listened with {what}; stderr:\n{log}");
        log
    }

    /// Waits until the current run logged `listening on ADDR` at least `n` times; sets `addr` to
    /// the first and returns them all.
    pub fn wait_listening(&mut self, n: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addrs = loop {
            let a = listen_addrs(&self.run_log());
            if a.len() >= n {
                break a;
            }
            self.assert_running("before logging `listening on`");
            assert!(Instant::now() < deadline, "no `listening on` line after {START_TIMEOUT:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        };
        self.addr = addrs[0];
        addrs
    }

    /// Waits until the current run's log contains `needle` (e.g. the request line pier logs
    /// once it has finished with a request); panics with the log if the process exits first.
    #[track_caller]
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout);
    }

    /// How many times the current run's log contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.run_log().matches(needle).count()
    }

    /// Waits until the current run's log contains `needle` at least `n` times (take
    /// [`Pier::log_count`] before triggering the event to wait for the next occurrence).
    #[track_caller]
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_count(needle) < n {
            assert!(!self.has_exited(), "the process exited before logging {needle:?}; log:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged {n} time(s) within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process has exited (a zombie, or gone), without reaping it.
    pub fn has_exited(&self) -> bool {
        let Some(c) = &self.child else { return true };
        match std::fs::read_to_string(format!("/proc/{}/stat", c.id())) {
            // `PID (COMM) STATE ...`: COMM may hold spaces and parentheses, STATE follows the last `)`.
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    /// Waits until `GET /v2/` on `addr` gets an HTTP answer; returns its status.
    pub fn wait_http(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = try_request(self.addr, "GET", "/v2/", &[], b"") {
                return r.status;
            }
            self.assert_running("before answering HTTP");
            assert!(
                Instant::now() < deadline,
                "no HTTP answer on {} within {timeout:?}; log:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => c.try_wait().unwrap().is_none(),
        }
    }

    /// Panics (with the log) if the process has exited.
    #[track_caller]
    pub fn assert_running(&mut self, when: &str) {
        let c = self.child.as_mut().expect("not started");
        if let Some(st) = c.try_wait().unwrap() {
            self.child = None;
            panic!("the process exited ({st}) {when}; log:\n{}", self.log());
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// `kill -SIG PID` (the real kill(1), as systemd would send it).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid();
        let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {pid} failed");
    }

    /// Waits for the process to exit; returns its status and when it was seen to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Instant)> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().expect("not running").try_wait().unwrap() {
                self.child = None;
                return Some((st, Instant::now()));
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Like `wait_exit`, panicking (with the log) when it does not exit in time.
    #[track_caller]
    pub fn expect_exit(&mut self, timeout: Duration, why: &str) -> (ExitStatus, Instant) {
        match self.wait_exit(timeout) {
            Some(x) => x,
            None => panic!("still running {timeout:?} {why}; log:\n{}", self.log_tail()),
        }
    }

    /// Graceful stop: SIGTERM, then the process must exit with code 0.
    #[track_caller]
    pub fn stop(&mut self) {
        self.signal("TERM");
        let (st, _) = self.expect_exit(Duration::from_secs(10), "after SIGTERM");
        assert_eq!(st.code(), Some(0), "exit status after SIGTERM; log:\n{}", self.log_tail());
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything every run wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What the current (or last) run wrote to stderr.
    pub fn run_log(&self) -> String {
        self.log().get(self.log_offset..).unwrap_or("").to_string()
    }

    /// The last 80 lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// `127.0.0.1:PORT`, the form skopeo/podman want in `docker://` references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn get(&self, path: &str) -> Response {
        self.req("GET", path, &[], b"")
    }

    /// One request to `addr`; panics with the log's tail if no response can be read.
    #[track_caller]
    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        match try_request(self.addr, method, path, headers, body) {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} on {}: {e}\n--- pier log (tail) ---\n{}", self.addr, self.log_tail()),
        }
    }
}

impl Drop for Pier {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The addresses in every `listening on ADDR` of a log (text or JSON lines alike: the address
/// ends at the first character that cannot be part of one, e.g. a space or a quote).
pub fn listen_addrs(log: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (i, m) in log.match_indices("listening on ") {
        let rest = &log[i + m.len()..];
        let rest = rest.trim_start_matches("http://").trim_start_matches("https://");
        let token: String =
            rest.chars().take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')).collect();
        if let Ok(a) = token.parse() {
            out.push(a);
        }
    }
    out
}
