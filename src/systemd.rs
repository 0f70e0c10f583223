//! systemd integration: socket activation (`LISTEN_FDS`), readiness and status notification
//! (`NOTIFY_SOCKET`: `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`), the watchdog
//! (`WATCHDOG_USEC`), and detection of a journal-connected stderr (`JOURNAL_STREAM`).
//!
//! Everything here is a no-op outside systemd, so the same binary runs anywhere.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The listening sockets systemd passed (`LISTEN_FDS`).
#[derive(Default)]
pub struct Activated {
    /// TCP listeners: the registry's (with their `FileDescriptorName=`).
    pub http: Vec<(std::net::TcpListener, Option<String>)>,
    /// A Unix stream listener: the admin channel (`admin.sock`), so that a maintenance command
    /// finds a socket (and starts pier) even while the service is stopped.
    pub admin: Option<std::os::unix::net::UnixListener>,
}

/// Listening sockets passed by systemd (or `systemd-socket-activate`), if any: TCP listeners,
/// and at most one Unix stream listener (the admin socket). Anything else is an error, since
/// pier would not know what to do with it.
pub fn activated_listeners() -> io::Result<Activated> {
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<String> =
        std::env::var("LISTEN_FDNAMES").map(|n| n.split(':').map(str::to_string).collect()).unwrap_or_default();
    let mut out = Activated::default();
    for i in 0..fds.len() {
        let fd = i + 3;
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => {
                l.set_nonblocking(true)?;
                out.http.push((l, names.get(i).cloned()));
            }
            Ok(None) => {}
            // Not TCP (the fd stays in place): a Unix stream listener is the admin socket.
            Err(_) => match fds.take_unix_listener(i) {
                Ok(Some(l)) if out.admin.is_none() => {
                    l.set_nonblocking(true)?;
                    out.admin = Some(l);
                }
                Ok(Some(_)) => {
                    return Err(io::Error::other(format!(
                        "inherited file descriptor {fd} is a second Unix socket (one admin socket at most)"
                    )))
                }
                Ok(None) | Err(_) => {
                    return Err(io::Error::other(format!(
                        "inherited file descriptor {fd} is neither a TCP nor a Unix stream listening socket"
                    )))
                }
            },
        }
    }
    std::env::remove_var("LISTEN_FDNAMES");
    Ok(out)
}

/// Sends sd_notify messages when `NOTIFY_SOCKET` is set.
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, addr))
        });
        Notifier { target }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (`KEY=VALUE` lines). Failures are logged, never fatal.
    pub fn notify(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                log::debug!("sd_notify failed: {e}");
            }
        }
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=reloading configuration"));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping: draining in-flight requests");
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// Half of `WATCHDOG_USEC` (how often to ping), when the watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
