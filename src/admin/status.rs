//! `status`: what the daemon serves and what the store holds; the same result whether the
//! daemon answered or the command read the store itself.

use serde::{Deserialize, Serialize};

use crate::store::{Store, Summary};

/// The result of the `status` command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub data_dir: String,
    /// The daemon that answered; `None` when no daemon runs and the store was read directly.
    pub daemon: Option<Daemon>,
    pub store: Summary,
}

/// The running daemon, as it describes itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    pub pid: u32,
    pub uptime_secs: u64,
    /// The addresses it listens on.
    pub listening: Vec<String>,
}

/// The status of `store`, seen from `daemon` (or directly).
pub fn status(store: &Store, daemon: Option<Daemon>) -> crate::store::Result<Status> {
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: store.root().display().to_string(),
        daemon,
        store: store.summary()?,
    })
}

impl std::fmt::Display for Status {
    /// The human form (`pier status` without `--json`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.daemon {
            Some(d) => writeln!(
                f,
                "pier {}: running, pid {}, up {}, listening on {}",
                self.version,
                d.pid,
                humantime::format_duration(std::time::Duration::from_secs(d.uptime_secs)),
                d.listening.join(", ")
            )?,
            None => writeln!(f, "pier {}: no daemon running (the store was read directly)", self.version)?,
        }
        let s = &self.store;
        writeln!(f, "data directory  {}", self.data_dir)?;
        writeln!(f, "repositories    {}", s.repositories)?;
        writeln!(f, "manifests       {}", s.manifests)?;
        writeln!(f, "tags            {}", s.tags)?;
        writeln!(f, "blobs           {} ({})", s.blobs, super::human_bytes(s.blob_bytes))?;
        writeln!(f, "open uploads    {}", s.uploads)?;
        write!(f, "index.json due  {}", s.layouts_due)
    }
}
