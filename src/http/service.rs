//! The hyper service: one request from arrival to response. It authenticates the caller,
//! routes the path once (the same [`Route`](router::Route) feeds dispatch and the access log), dispatches,
//! adds the headers every response carries and writes the access log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::access_log::{self, LoggedBody};
use super::authn::authenticate;
use super::dispatch::dispatch;
use super::error::HttpError;
use super::router;
use super::settings::State;
use super::API_VERSION;
use crate::core::access::Identity;

pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<LoggedBody>, Infallible> {
    let started = Instant::now();
    let settings = state.settings();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = router::route_under(&state.config.prefix, &path);
    let (user, result) = match authenticate(&state, &req, peer).await {
        Ok(identity) => {
            let user = match &identity {
                Identity::User(u) => u.clone(),
                Identity::Anonymous => String::from("-"),
            };
            (user, dispatch(&state, &settings, route, req, identity).await)
        }
        Err(e) => (String::from("-"), Err(e)),
    };
    let mut resp = result.unwrap_or_else(HttpError::into_response);
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    for (k, v) in &settings.extra_headers {
        h.append(k.clone(), v.clone());
    }
    let record = settings.access_log.then(|| {
        let request = access_log::Request { started, peer, user: &user, method: &method, path: &path, route: &route };
        access_log::Record::new(&request, resp.status().as_u16())
    });
    Ok(resp.map(|body| LoggedBody::new(body, record)))
}
