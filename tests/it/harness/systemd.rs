//! What systemd would provide, made by hand so the tests need no systemd as PID 1: a fake
//! sd_notify socket (`NOTIFY_SOCKET`) recording every message with its arrival time, a signal
//! sender armed in advance, free loopback addresses for socket activation, and the program a
//! process runs now.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Distinct loopback addresses that were free a moment ago (bound to `127.0.0.1:0` together, read,
/// closed).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// The program `/proc/PID/exe` points at (its file name; ` (deleted)` if rebuilt meanwhile).
pub fn exe_name(pid: u32) -> String {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|e| panic!("/proc/{pid}/exe: {e}"));
    target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
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
