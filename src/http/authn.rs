//! Authentication of a request: who sent it, from its `Authorization` header (verified by
//! [`Authenticator`](super::auth::Authenticator)), and the 401 answer with the Basic challenge.
//!
//! Bad credentials are an error even where anonymous requests would be allowed. An address that
//! has used up its failed attempts gets 429 `TOOMANYREQUESTS` with `Retry-After` before bcrypt
//! runs; at most one bcrypt runs per core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
/// an error for bad credentials, or for an address that has used up its attempts (429 at once,
/// before bcrypt runs).
pub async fn authenticate(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Result<Identity, HttpError> {
    let Some(auth) = &state.auth else { return Ok(Identity::Anonymous) };
    let header = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let verdict = match auth.verify_fast(header.as_deref()) {
        // A malformed header costs an attempt too (it is one more guess).
        Some(Verdict::Invalid) => match auth.reserve_attempt(peer.ip()) {
            Ok(()) => Verdict::Invalid,
            Err((retry_after, first)) => throttled(peer, retry_after, first),
        },
        Some(v) => v,
        None => {
            // Same credentials in flight elsewhere: wait for that verification, then the cache.
            let _turn = auth.verification_turn(header.as_deref().unwrap_or_default()).await;
            match auth.verify_fast(header.as_deref()) {
                Some(v) => v,
                None => verify(auth, header.as_deref(), peer).await?,
            }
        }
    };
    match verdict {
        Verdict::Anonymous => Ok(Identity::Anonymous),
        Verdict::User(u) => Ok(Identity::User(u)),
        Verdict::Invalid => {
            match header.as_deref().and_then(auth::parse_basic) {
                Some((u, _)) => log::warn!("authentication failed for user {u:?} from {}", peer.ip()),
                None => log::warn!("malformed Authorization header from {}", peer.ip()),
            }
            Err(unauthorized(state, "invalid credentials"))
        }
        Verdict::Throttled(retry_after) => Err(HttpError::new(
            ErrorCode::TooManyRequests,
            "too many failed authentication attempts from this address; try again later",
        )
        .header(http::header::RETRY_AFTER, retry_after.as_secs().max(1).to_string())),
    }
}

/// Runs bcrypt for `header` if the address has an attempt left (a success gives it back), at
/// most one bcrypt per core at a time.
async fn verify(auth: &Arc<Authenticator>, header: Option<&[u8]>, peer: SocketAddr) -> Result<Verdict, HttpError> {
    if let Err((retry_after, first)) = auth.reserve_attempt(peer.ip()) {
        return Ok(throttled(peer, retry_after, first));
    }
    let _slot = auth.bcrypt_slots.acquire().await.map_err(HttpError::internal)?;
    let (a, h) = (auth.clone(), header.map(<[u8]>::to_vec));
    let verdict =
        tokio::task::spawn_blocking(move || a.verify_blocking(h.as_deref())).await.map_err(HttpError::internal)?;
    if matches!(verdict, Verdict::User(_)) {
        auth.refund_attempt(peer.ip());
    }
    Ok(verdict)
}

/// The verdict for an address past its attempts (logged once per window).
fn throttled(peer: SocketAddr, retry_after: Duration, first: bool) -> Verdict {
    if first {
        log::warn!(
            "{} failed authentication attempts from {} (its /64 for IPv6): further attempts refused for {}s",
            auth::ATTEMPTS_ALLOWED,
            peer.ip(),
            retry_after.as_secs().max(1)
        );
    }
    Verdict::Throttled(retry_after)
}
