//! One module per resource of the API, and the helpers they share to build responses and to
//! call the (blocking) store.
//!
//! Handlers run only for requests that are authenticated, authorized and allowed by the
//! registry policy (see `dispatch`); they validate names and digests and do the work.

pub mod blobs;
pub mod listing;
pub mod manifests;
pub mod uploads;

use http::{Method, Response, StatusCode};

use super::body::ResponseBody;
use super::context::Ctx;
use super::error::HttpError;
use crate::store::StoreError;

pub type HttpResult = Result<Response<ResponseBody>, HttpError>;

/// Runs a blocking store operation off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f).await.map_err(HttpError::internal)?.map_err(HttpError::from)
}

/// A response builder with the given status.
pub fn reply(status: StatusCode) -> http::response::Builder {
    Response::builder().status(status)
}

/// Finishes a builder, turning an invalid header into an internal error.
pub fn finish(b: http::response::Builder, body: ResponseBody) -> HttpResult {
    b.body(body).map_err(HttpError::internal)
}

/// `GET`/`HEAD /v2/`: the API version check, an empty JSON object.
pub fn api_version(ctx: &Ctx<'_>) -> HttpResult {
    let b = reply(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, "2");
    finish(b, if ctx.method == Method::HEAD { ResponseBody::empty() } else { ResponseBody::full(&b"{}"[..]) })
}
