//! The hyper service: one request from arrival to response. It authenticates the caller,
//! routes the path once (the same [`Route`](router::Route) feeds dispatch and the access log), dispatches,
//! adds the headers every response carries and writes the access log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::access_log::{self, LoggedBody};
use super::authn::authenticate;
use super::body::ResponseBody;
use super::dispatch::dispatch;
use super::error::HttpError;
use super::router;
use super::settings::State;
use super::API_VERSION;
use crate::core::access::Identity;

/// A `HEAD` answer carries the headers of the `GET` answer and no body, on every path and both
/// protocols (hyper drops it over HTTP/1.1 but would send it over HTTP/2, which clients take
/// as a protocol error). The length the body had stays in `Content-Length`.
fn headers_only(resp: &mut Response<ResponseBody>) {
    if !resp.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = http_body::Body::size_hint(resp.body()).exact() {
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    *resp.body_mut() = ResponseBody::empty();
}

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
    if method == Method::HEAD {
        headers_only(&mut resp);
    }
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
