//! [`RemoteError`]: everything that can go wrong talking to a remote registry, and its one
//! mapping into the export's [`SourceError`].
//!
//! Invariant: no variant ever holds a password, a token or an `Authorization` header; details
//! are built from the registry's own error codes and messages, statuses and URLs (which never
//! carry credentials: a URL with userinfo is refused when the options are read).

use std::path::PathBuf;

use crate::bundle::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `--from` is not an `http://` or `https://` registry URL pier can use.
    #[error("{url:?} is not a registry URL: {why}")]
    BadUrl { url: String, why: String },
    /// The trusted roots (system bundle or `--ca FILE`) could not be read.
    #[error("CA file {}: {why}", path.display())]
    CaFile { path: PathBuf, why: String },
    /// The client's runtime or TLS configuration could not be built.
    #[error("cannot set up the registry client: {0}")]
    Setup(String),
    /// No connection could be made, or it broke before an answer came (after the retries).
    #[error("{what}: {origin}: {detail}")]
    Connection { what: String, origin: String, detail: String },
    /// The registry stopped answering (connect, response head or a body read) for too long.
    #[error("{what}: {origin} did not answer within {secs} s")]
    Timeout { what: String, origin: String, secs: u64 },
    /// The registry says the repository, manifest or blob does not exist.
    #[error("{what}: not found{}", detail_suffix(detail))]
    NotFound { what: String, detail: String },
    /// The registry (or its token service) refused the credentials, or gave no access.
    #[error("{what}: access denied: {detail}")]
    Denied { what: String, detail: String },
    /// Any other error status (after the retries for 502/503/504).
    #[error("{what}: the registry answered {status}{}", detail_suffix(detail))]
    Status { what: String, status: u16, detail: String },
    /// An answer that breaks the protocol: bad JSON, digest mismatch, too large, no size,
    /// a redirect pier refuses, a pagination link to elsewhere.
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl From<RemoteError> for SourceError {
    fn from(e: RemoteError) -> SourceError {
        match e {
            RemoteError::NotFound { what, detail } => {
                SourceError::NotFound { what: if detail.is_empty() { what } else { format!("{what} ({detail})") } }
            }
            RemoteError::Denied { what, detail } => SourceError::Denied { what, detail },
            RemoteError::Invalid { what, detail } => SourceError::Invalid { what, detail },
            RemoteError::BadUrl { url, why } => {
                SourceError::Invalid { what: format!("registry URL {url:?}"), detail: why }
            }
            e @ RemoteError::Timeout { .. } => SourceError::Io {
                what: String::from("remote registry"),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, e),
            },
            e => SourceError::Io { what: String::from("remote registry"), source: std::io::Error::other(e) },
        }
    }
}

/// An error and its sources as one line (`a: b: c`): hyper's own `Display` says little
/// ("client error (Connect)"); the cause is in the chain.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = s.source();
    }
    text
}
