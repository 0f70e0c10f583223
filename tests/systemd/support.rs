//! Helpers for `tests/systemd.rs`: runs `pier serve` as a plain child process (directly or under
//! `systemd-socket-activate`) with full control of its environment and signals, its stderr
//! appended to a file (so a test can point `JOURNAL_STREAM` at that file's inode), a fake
//! sd_notify socket, and a PATCH that streams its body slowly from a thread.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::util::*;

pub const PIER: &str = env!("CARGO_BIN_EXE_pier");

/// Distinct loopback addresses that were free a moment ago (bound to `127.0.0.1:0` together, read,
/// closed).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
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

/// The program `/proc/PID/exe` points at (its file name; ` (deleted)` if rebuilt meanwhile).
pub fn exe_name(pid: u32) -> String {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|e| panic!("/proc/{pid}/exe: {e}"));
    target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// One data directory and config, and at most one running process using them.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
    /// Every run's stderr, appended.
    pub log_path: PathBuf,
    /// `http.addr` in the config.
    pub listen: String,
    /// Extra lines under `http:`, indented by two spaces (e.g. `  draintimeout: 5s\n`).
    pub http_yaml: String,
    /// Extra top-level YAML.
    pub yaml: String,
    /// Where requests go: the current run's first `listening on` address, or set by the test.
    pub addr: SocketAddr,
    pub child: Option<Child>,
    log_offset: usize,
}

impl Daemon {
    pub fn new(listen: &str, http_yaml: &str, yaml: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = Daemon {
            root: dir.path().join("data"),
            config: dir.path().join("config.yml"),
            log_path: dir.path().join("stderr.log"),
            listen: listen.to_string(),
            http_yaml: http_yaml.to_string(),
            yaml: yaml.to_string(),
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            log_offset: 0,
            dir,
        };
        d.write_config();
        d
    }

    pub fn write_config(&self) {
        let text = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n{}{}",
            self.root.display(),
            self.listen,
            self.http_yaml,
            self.yaml
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// `pier serve --config CONFIG`.
    pub fn command(&self) -> Command {
        let mut c = Command::new(PIER);
        c.arg("serve").arg("--config").arg(&self.config);
        c
    }

    /// Spawns `cmd` with stdin and stdout on /dev/null and stderr appended to the log file.
    pub fn spawn_cmd(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "already running");
        let log = OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open log file");
        self.log_offset = log.metadata().unwrap().len() as usize;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (systemd tools come with Debian's `systemd` package; .ci/run installs it)")
        });
        self.child = Some(child);
    }

    /// Spawns `pier serve` with extra environment variables (nothing else is changed).
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.command();
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn_cmd(cmd);
    }

    /// Spawns `pier serve` and waits until it logged where it listens; returns that address.
    pub fn start(&mut self, env: &[(&str, &str)]) -> SocketAddr {
        self.spawn(env);
        self.wait_listening(1)[0]
    }

    /// Waits until the current run logged `listening on ADDR` at least `n` times; sets `addr` to
    /// the first and returns them all.
    pub fn wait_listening(&mut self, n: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addrs = loop {
            let a = listen_addrs(&self.run_log());
            if a.len() >= n {
                break a;
            }
            self.assert_running("before logging `listening on`");
            assert!(Instant::now() < deadline, "no `listening on` line after 30 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        };
        self.addr = addrs[0];
        addrs
    }

    /// Waits until the current run's log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.run_log().contains(needle) {
            self.assert_running(&format!("before logging {needle:?}"));
            assert!(Instant::now() < deadline, "{needle:?} not logged within {timeout:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
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
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => c.try_wait().unwrap().is_none(),
        }
    }

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
    pub fn expect_exit(&mut self, timeout: Duration, why: &str) -> (ExitStatus, Instant) {
        match self.wait_exit(timeout) {
            Some(x) => x,
            None => panic!("still running {timeout:?} {why}; log:\n{}", self.log_tail()),
        }
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

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        match try_request(self.addr, method, path, headers, body) {
            Ok(r) => r,
            Err(e) => panic!("{method} {path} on {}: {e}\n{}", self.addr, self.log_tail()),
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.req("GET", path, &[], b"")
    }

    /// Monolithic POST + PUT; asserts 201 and returns the digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let loc = self.start_upload(repo);
        let r = self.req("PUT", &with_digest(&loc, &digest), &[("Content-Type", "application/octet-stream")], data);
        assert_eq!(r.status, 201, "PUT blob {digest} in {repo}: {}\n{}", r.text(), self.log_tail());
        digest
    }

    /// POST an upload; returns its location (origin stripped).
    pub fn start_upload(&self, repo: &str) -> String {
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(r.status, 202, "POST upload in {repo}: {}\n{}", r.text(), self.log_tail());
        strip_origin(r.header("location").expect("Location on POST"))
    }

    /// One PATCH of `data[range]` to `loc`; asserts 202 with the whole prefix held; returns the
    /// next location.
    pub fn patch(&self, loc: &str, data: &[u8], range: Range<usize>) -> String {
        let cr = format!("{}-{}", range.start, range.end - 1);
        let r = self.req(
            "PATCH",
            loc,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)],
            &data[range.clone()],
        );
        assert_eq!(r.status, 202, "PATCH {cr}: {}\n{}", r.text(), self.log_tail());
        assert_eq!(range_len(&r), range.end as u64, "Range after PATCH {cr}");
        r.header("location").map(strip_origin).unwrap_or_else(|| loc.to_string())
    }

    /// Pushes config, layers and manifest of `img` as `repo:tag` (raw HTTP).
    pub fn push_image(&self, repo: &str, tag: &str, img: &Image) {
        for b in img.blobs() {
            self.push_blob(repo, b);
        }
        let r =
            self.req("PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Content-Type", OCI_MANIFEST)], &img.manifest);
        assert_eq!(r.status, 201, "PUT manifest {repo}:{tag}: {}\n{}", r.text(), self.log_tail());
        assert_eq!(r.header("docker-content-digest"), Some(img.digest().as_str()), "digest of {repo}:{tag}");
    }

    /// Pulls `repo:tag` (raw HTTP) and compares every byte with `img`: the manifest by tag and by
    /// digest, the config and every layer.
    pub fn assert_image(&self, repo: &str, tag: &str, img: &Image) {
        for reference in [tag.to_string(), img.digest()] {
            let r = self.req("GET", &format!("/v2/{repo}/manifests/{reference}"), &[("Accept", ACCEPT_ALL)], b"");
            assert_eq!(r.status, 200, "GET manifest {repo}:{reference}: {}\n{}", r.text(), self.log_tail());
            assert!(r.body == img.manifest, "manifest {repo}:{reference} differs from what was pushed");
            assert_eq!(r.header("docker-content-digest"), Some(img.digest().as_str()), "{repo}:{reference}");
        }
        for b in img.blobs() {
            let d = sha256_digest(b);
            let r = self.get(&format!("/v2/{repo}/blobs/{d}"));
            assert_eq!(r.status, 200, "GET blob {repo}@{d}: {}\n{}", r.text(), self.log_tail());
            assert!(
                r.body == b,
                "blob {repo}@{d} differs from what was pushed ({} vs {} bytes)",
                r.body.len(),
                b.len()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A fake systemd notification socket (`NOTIFY_SOCKET`): a bound unix datagram socket that
/// records every message with its arrival time.
pub struct Notify {
    pub path: PathBuf,
    sock: UnixDatagram,
    /// Every datagram so far.
    pub received: Vec<(Instant, String)>,
    _dir: tempfile::TempDir,
}

impl Notify {
    pub fn new() -> Notify {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        Notify { path, sock, received: Vec::new(), _dir: dir }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn env(&self) -> String {
        self.path.to_str().expect("utf-8 path").to_string()
    }

    /// Receives one datagram if one arrives before `until`.
    fn recv(&mut self, until: Instant) -> Option<(Instant, String)> {
        let left = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.sock.set_read_timeout(Some(left)).unwrap();
        let mut buf = vec![0u8; 65536];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let m = (Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned());
                self.received.push(m.clone());
                Some(m)
            }
            Err(_) => None,
        }
    }

    /// Reads messages until one satisfies `pred` (returned) or `timeout` passes (None).
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        let end = Instant::now() + timeout;
        loop {
            match self.recv(end) {
                Some(m) if pred(&m.1) => return Some(m),
                Some(_) => {}
                None if Instant::now() >= end => return None,
                None => {}
            }
        }
    }

    /// Every message arriving within `d`.
    pub fn collect_for(&mut self, d: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while Instant::now() < end {
            if let Some(m) = self.recv(end) {
                out.push(m);
            }
        }
        out
    }

    /// All messages so far, for failure messages.
    pub fn dump(&self) -> String {
        let t0 = self.received.first().map(|m| m.0);
        self.received
            .iter()
            .map(|(t, m)| format!("  +{:>5}ms {:?}", t0.map_or(0, |t0| t.duration_since(t0).as_millis()), m))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether an sd_notify message has exactly this `KEY=VALUE` line.
pub fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

/// The value of `KEY=` in an sd_notify message.
pub fn value<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A PATCH streamed from a thread: the first `fast` bytes at once, then `piece` bytes per
/// `pause`. The thread reports how much of the body it has written.
pub struct SlowPatch {
    pub sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<std::io::Result<Response>>>,
}

/// PATCHes `data[range]` (Content-Range `start-end`) to `loc` on a fresh connection.
pub fn slow_patch(
    addr: SocketAddr,
    loc: &str,
    data: Arc<Vec<u8>>,
    range: Range<usize>,
    fast: usize,
    piece: usize,
    pause: Duration,
) -> SlowPatch {
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2, loc) = (sent.clone(), stop.clone(), loc.to_string());
    let handle = std::thread::spawn(move || -> std::io::Result<Response> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Range: {}-{}\r\nContent-Length: {}\r\n\r\n",
            range.start,
            range.end - 1,
            range.len()
        );
        s.write_all(head.as_bytes())?;
        let mut pos = range.start;
        let fast_end = (range.start + fast).min(range.end);
        while pos < fast_end {
            let n = (1 << 20).min(fast_end - pos);
            s.write_all(&data[pos..pos + n])?;
            pos += n;
            s2.fetch_add(n, Ordering::SeqCst);
        }
        while pos < range.end {
            if st2.load(Ordering::SeqCst) {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "stopped by the test"));
            }
            let n = piece.min(range.end - pos);
            s.write_all(&data[pos..pos + n])?;
            pos += n;
            s2.fetch_add(n, Ordering::SeqCst);
            std::thread::sleep(pause);
        }
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed without a response"));
        }
        std::panic::catch_unwind(|| read_response(&mut std::io::Cursor::new(buf), false))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated response"))
    });
    SlowPatch { sent, stop, handle: Some(handle) }
}

impl SlowPatch {
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` body bytes were written.
    pub fn wait_sent(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.sent() < n {
            if Instant::now() >= end || self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                return self.sent() >= n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Makes the writer give up before its next piece.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn join(mut self) -> std::io::Result<Response> {
        self.handle.take().unwrap().join().expect("uploader thread panicked")
    }
}

impl Drop for SlowPatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A shell that is already running and waits on its stdin to send a signal with its builtin
/// `kill`: the signal goes out microseconds after `fire`, with no fork/exec in between (the
/// way systemd can send SIGHUP or SIGTERM the moment it sees READY=1).
pub struct ArmedKill {
    child: Child,
}

impl ArmedKill {
    pub fn new() -> ArmedKill {
        let child = Command::new("sh")
            .args(["-c", r#"read sig pid && kill -s "$sig" "$pid""#])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run sh");
        ArmedKill { child }
    }

    pub fn fire(mut self, sig: &str, pid: u32) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(format!("{sig} {pid}\n").as_bytes()).expect("write to sh");
        drop(stdin);
        let st = self.child.wait().unwrap();
        assert!(st.success(), "kill -s {sig} {pid} failed");
    }
}
