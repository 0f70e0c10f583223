//! The local admin channel: how `pier` subcommands (`pier status` today; gc, scrub, du, import
//! and export next) reach a running daemon, since redb lets one process at a time open the store.
//!
//! - Where: a Unix socket `admin.sock` in the data directory, so that a command given the same
//!   configuration as `pier serve` (`--config` or the `REGISTRY_*` environment) finds it. Never
//!   on the network.
//! - Who: the socket file is mode 0600 and every connection's peer credentials are checked
//!   (`SO_PEERCRED`): only the daemon's own user and root are answered; anyone else gets an
//!   `error` event and the connection is closed.
//! - What: one request per connection, a JSON object on one line (`{"command":"status"}`); the
//!   answer is JSON objects one per line: any number of `progress` events, then exactly one
//!   `done` (with the result) or `error` ([`protocol`]). The same result types are produced when
//!   no daemon runs and the command opens the store itself, so the output does not depend on
//!   where the answer came from.
//! - Bounds: a request line is at most `MAX_REQUEST` bytes and must arrive within
//!   `REQUEST_TIMEOUT`; at most `MAX_CONNECTIONS` admin connections are served at once; the
//!   work runs on blocking threads, never on the connection's task.

pub mod client;
pub mod du;
pub mod protocol;
pub mod server;
pub mod status;

use std::path::{Path, PathBuf};

/// The admin socket of the data directory `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("admin.sock")
}

/// `n` bytes in binary units with one decimal (`1.5 GiB`), or plain bytes below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(super::human_bytes(0), "0 bytes");
        assert_eq!(super::human_bytes(1023), "1023 bytes");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(5 << 30), "5.0 GiB");
    }
}
