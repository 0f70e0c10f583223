//! The admin channel's messages: a [`Request`] line from the client, [`Event`] lines back.
//!
//! A request line may travel with file descriptors (`SCM_RIGHTS`, at most [`MAX_FDS`]): the
//! ends of pipes a bundle's bytes flow through, opened by the command with the invoking user's
//! rights. Each request says how many it takes ([`Request::expected_fds`]); a request that
//! arrives with another number is refused before it runs.

use serde::{Deserialize, Serialize};

/// Longest request line accepted (requests are small: a command and its options).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Most file descriptors one request may carry; a request with more is refused (the kernel
/// closes those beyond the receive buffer, the daemon the rest).
pub const MAX_FDS: usize = 4;

/// One request per connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// What the daemon serves and what the store holds. (A struct variant: serde refuses
    /// unknown fields only in those.)
    Status {},
    /// Drop the tags the configured retention policies name (`store::retention`).
    Retention { dry_run: bool },
    /// Re-hash every blob; quarantine the corrupt ones (`store::scrub`).
    Scrub {},
    /// Check the derived data (files, layouts, derived tables) against the metadata; with
    /// `repair`, rebuild it (`store::fsck`).
    Fsck { repair: bool },
    /// Disk usage per repository (or of one) and of the store.
    Du { repository: Option<String> },
    /// Garbage collection (`store::gc`): what no live manifest needs leaves each repository.
    Gc {
        /// Blob links younger than this many seconds are kept.
        grace_secs: u64,
        /// Also untagged manifests that nothing tagged needs.
        untagged: bool,
        /// Report only.
        dry_run: bool,
        /// Every repository, not only those changed since the last collection.
        #[serde(default)]
        full: bool,
    },
    /// Write a bundle (`bundle::export`) into the pipe passed with the request (its write end,
    /// the first descriptor); with `exclude_inventory`, the second descriptor is the inventory
    /// file to read (a delta). The daemon writes a plain tar stream; compression and volumes
    /// are the command's.
    Export {
        /// `repo:tag`, `repo@digest` or `repo`.
        references: Vec<String>,
        all: bool,
        /// `os/arch[/variant]`.
        platforms: Vec<String>,
        exclude_inventory: bool,
    },
    /// Write the store's inventory (`bundle::inventory`) into the pipe passed with the request.
    Inventory {},
    /// Import the images of the plain tar stream read from the one descriptor passed with
    /// the request (the read end of a pipe the command writes the archive into; see
    /// `bundle::import`).
    Import {
        /// `--repo NAME`: the repository of a single-repository archive.
        repository: Option<String>,
        /// `--repo OLD=NEW`, as `[OLD, NEW]`.
        renames: Vec<[String; 2]>,
    },
}

impl Request {
    /// The command's name, as the client wrote it (for logs).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Du { .. } => "du",
            Request::Scrub {} => "scrub",
            Request::Fsck { repair: true } => "fsck --repair",
            Request::Fsck { .. } => "fsck",
            Request::Retention { dry_run: true } => "retention --dry-run",
            Request::Retention { .. } => "retention",
            Request::Gc { dry_run: true, .. } => "gc --dry-run",
            Request::Gc { .. } => "gc",
            Request::Export { exclude_inventory: true, .. } => "export --exclude-inventory",
            Request::Export { .. } => "export",
            Request::Inventory {} => "inventory",
            Request::Import { .. } => "import",
        }
    }

    /// How many file descriptors the request travels with (`SCM_RIGHTS`), in the order the
    /// command uses them. Any other number is refused.
    pub fn expected_fds(&self) -> usize {
        match self {
            Request::Status {}
            | Request::Retention { .. }
            | Request::Scrub {}
            | Request::Fsck { .. }
            | Request::Du { .. }
            | Request::Gc { .. } => 0,
            Request::Export { exclude_inventory, .. } => 1 + usize::from(*exclude_inventory),
            Request::Inventory {} => 1,
            Request::Import { .. } => 1,
        }
    }
}

/// One line of the answer: any number of `Progress`, then one `Done` or `Error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
pub enum Event {
    /// A step of a long command, for a progress display: a message (one item done, a phase
    /// begun), and where a command counts bytes, how many are done of how many in all. Older
    /// clients and commands that count nothing leave `done`/`total` out.
    Progress {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        done: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// The command's result (its shape depends on the command).
    Done { result: serde_json::Value },
    /// The command failed or was refused.
    Error { message: String },
}

impl Event {
    /// A progress message without byte counts.
    pub fn progress(message: impl Into<String>) -> Event {
        Event::Progress { message: message.into(), done: None, total: None }
    }

    /// The event as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            // Serialising these enums cannot fail (string keys, no maps with non-string keys);
            // should it ever, the client still gets a well-formed error.
            format!(r#"{{"event":"error","message":"cannot encode the answer: {e}"}}"#).into_bytes()
        });
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_events_round_trip_and_unknown_fields_are_refused() {
        let r: Request = serde_json::from_str(r#"{"command":"status"}"#).unwrap();
        assert_eq!(r, Request::Status {});
        assert!(serde_json::from_str::<Request>(r#"{"command":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"rm -rf"}"#).is_err());
        let e = Event::Done { result: serde_json::json!({"a": 1}) };
        let line = e.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(serde_json::from_slice::<Event>(&line[..line.len() - 1]).unwrap(), e);
        // Progress without counts reads and writes as before the counts existed.
        let old: Event = serde_json::from_str(r#"{"event":"progress","message":"m"}"#).unwrap();
        assert_eq!(old, Event::progress("m"));
        assert_eq!(
            String::from_utf8(Event::progress("m").to_line()).unwrap(),
            "{\"event\":\"progress\",\"message\":\"m\"}\n"
        );
        let counted = Event::Progress { message: "m".into(), done: Some(5), total: Some(9) };
        let line = counted.to_line();
        assert_eq!(serde_json::from_slice::<Event>(&line[..line.len() - 1]).unwrap(), counted);
    }
}
