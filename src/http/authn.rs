//! Authentication of a request: who sent it, from its `Authorization` header (verified by
//! [`Authenticator`]), and the 401 answer with the Basic challenge.
//!
//! Bad credentials are an error even where anonymous requests would be allowed; they are
//! answered late when the address keeps failing.

use std::net::SocketAddr;

use http::Request;
use hyper::body::Incoming;

use super::auth::{self, Authenticator, Verdict};
use super::error::HttpError;
use super::settings::State;
use crate::core::access::Identity;
use crate::core::ErrorCode;

/// 401 with the Basic challenge.
pub fn unauthorized(state: &State, message: &str) -> HttpError {
    let realm = state.auth.as_ref().map_or("pier", |a| a.realm.as_str());
    HttpError::new(ErrorCode::Unauthorized, message)
        .header(http::header::WWW_AUTHENTICATE, format!("Basic realm=\"{}\"", realm.replace('"', "'")))
}

/// Who sent the request: anonymous (also whenever authentication is off), a verified user, or
/// an error for bad credentials.
pub async fn authenticate(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Result<Identity, HttpError> {
    let Some(auth) = &state.auth else { return Ok(Identity::Anonymous) };
    let header = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let verdict = match auth.verify_fast(header.as_deref()) {
        Some(v) => v,
        None => {
            let (a, h) = (auth.clone(), header.clone());
            tokio::task::spawn_blocking(move || a.verify_blocking(h.as_deref())).await.map_err(HttpError::internal)?
        }
    };
    match verdict {
        Verdict::Anonymous => Ok(Identity::Anonymous),
        Verdict::User(u) => Ok(Identity::User(u)),
        Verdict::Invalid => {
            failed(auth, header.as_deref(), peer).await;
            Err(unauthorized(state, "invalid credentials"))
        }
    }
}

/// Logs a failed authentication and waits as long as the address's failures require.
async fn failed(auth: &Authenticator, header: Option<&[u8]>, peer: SocketAddr) {
    match header.and_then(auth::parse_basic) {
        Some((u, _)) => log::warn!("authentication failed for user {u:?} from {}", peer.ip()),
        None => log::warn!("malformed Authorization header from {}", peer.ip()),
    }
    let delay = auth.record_failure(peer.ip());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
