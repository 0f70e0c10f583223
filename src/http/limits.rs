//! Global bounds (`limits` in the configuration): open connections, all together and per client
//! address, and transfers (blob downloads, upload bodies) in flight.
//!
//! Over a bound, new work is refused at once with a clear answer (`429`/`503` and
//! `Retry-After`), never queued: what is already admitted goes on, and requests that are not
//! transfers (manifests, tags, catalog, auth) never wait for transfers.
//!
//! Invariants:
//! - Every admitted connection holds one [`ConnectionGuard`] and every transfer one
//!   [`TransferPermit`]; the counts go down exactly when they are dropped.
//! - The per-client table holds only clients with an open connection, so its size is bounded by
//!   `limits.connections`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::attempt_key;
use super::error::HttpError;
use crate::config::Limits;
use crate::core::ErrorCode;

/// Seconds a refused client is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.connections` reached.
    Server,
    /// `limits.connectionsperclient` reached by this client.
    Client,
}

impl Refusal {
    /// The complete HTTP/1.1 answer sent to a refused plain-HTTP connection before it is
    /// closed.
    pub fn http_response(self) -> &'static [u8] {
        match self {
            Refusal::Server => concat!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n",
                "Connection: close\r\nContent-Length: 103\r\n\r\n",
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections to this registry","detail":null}]}"#
            )
            .as_bytes(),
            Refusal::Client => concat!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n",
                "Connection: close\r\nContent-Length: 104\r\n\r\n",
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections from your address","detail":null}]}"#
            )
            .as_bytes(),
        }
    }
}

/// The running bounds, shared by every connection.
pub struct Bounds {
    limits: Limits,
    connections: Arc<Mutex<ConnectionCounts>>,
    transfers: Arc<Semaphore>,
}

#[derive(Default)]
struct ConnectionCounts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// An admitted connection; dropping it frees its place.
pub struct ConnectionGuard {
    client: IpAddr,
    counts: Arc<Mutex<ConnectionCounts>>,
}

/// A transfer in flight; dropping it frees its place.
pub struct TransferPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Bounds {
    pub fn new(limits: Limits) -> Bounds {
        Bounds {
            limits,
            connections: Arc::default(),
            transfers: Arc::new(Semaphore::new(limits.transfers.min(Semaphore::MAX_PERMITS))),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits a new connection from `peer`, or says which bound it would cross.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnectionGuard, Refusal> {
        let client = attempt_key(peer);
        let mut counts = lock(&self.connections);
        if counts.total >= self.limits.connections {
            return Err(Refusal::Server);
        }
        let of_client = counts.per_client.entry(client).or_default();
        if *of_client >= self.limits.connections_per_client {
            return Err(Refusal::Client);
        }
        *of_client += 1;
        counts.total += 1;
        Ok(ConnectionGuard { client, counts: self.connections.clone() })
    }

    /// Open connections right now (all clients).
    pub fn open_connections(&self) -> usize {
        lock(&self.connections).total
    }

    /// A place for one more transfer, or the `503` that says to come back later.
    pub fn start_transfer(&self) -> Result<TransferPermit, HttpError> {
        match self.transfers.clone().try_acquire_owned() {
            Ok(permit) => Ok(TransferPermit(permit)),
            Err(_) => Err(HttpError::new(
                ErrorCode::TooManyRequests,
                format!("too many transfers in flight (limits.transfers = {}); retry later", self.limits.transfers),
            )
            .status(503)
            .header(http::header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())),
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

fn lock(m: &Mutex<ConnectionCounts>) -> std::sync::MutexGuard<'_, ConnectionCounts> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize, per_client: usize) -> Limits {
        Limits { connections, connections_per_client: per_client, ..Limits::default() }
    }

    #[test]
    fn connections_are_bounded_per_client_and_in_total_and_freed_on_drop() {
        let bounds = Bounds::new(limits(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let a1 = bounds.admit(a).unwrap();
        let _a2 = bounds.admit(a).unwrap();
        assert_eq!(bounds.admit(a).err(), Some(Refusal::Client));
        let _b1 = bounds.admit(b).unwrap();
        assert_eq!(bounds.admit(b_same_64).err(), Some(Refusal::Server));
        drop(a1);
        assert_eq!(bounds.open_connections(), 2);
        let _b2 = bounds.admit(b_same_64).unwrap();
        assert_eq!(bounds.admit(a).err(), Some(Refusal::Server));
    }

    #[test]
    fn transfers_are_bounded_and_freed_on_drop() {
        let bounds = Bounds::new(Limits { transfers: 1, ..Limits::default() });
        let first = bounds.start_transfer().unwrap();
        let refused = bounds.start_transfer().err().unwrap();
        assert_eq!(refused.status, 503);
        drop(first);
        assert!(bounds.start_transfer().is_ok());
    }

    #[test]
    fn refusal_answers_are_complete_http_responses() {
        for refusal in [Refusal::Server, Refusal::Client] {
            let text = std::str::from_utf8(refusal.http_response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
            assert_eq!(length, body.len(), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["errors"][0]["code"], "TOOMANYREQUESTS");
        }
    }
}
