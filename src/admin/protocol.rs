//! The admin channel's messages: a [`Request`] line from the client, [`Event`] lines back.

use serde::{Deserialize, Serialize};

/// Longest request line accepted (requests are small: a command and its options).
pub const MAX_REQUEST: usize = 64 * 1024;

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
        }
    }
}

/// One line of the answer: any number of `Progress`, then one `Done` or `Error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
pub enum Event {
    /// A step of a long command, for a progress display.
    Progress { message: String },
    /// The command's result (its shape depends on the command).
    Done { result: serde_json::Value },
    /// The command failed or was refused.
    Error { message: String },
}

impl Event {
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
    }
}
