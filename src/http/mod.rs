//! The OCI Distribution API over hyper.
//!
//! A request goes through `server` (connections) to `service` (authentication via `authn`,
//! routing by `router`, the access log), then `dispatch`: authorization (`authz`), the
//! registry policy (`core::policy`, checked once for every endpoint), the handler in `handlers`
//! (working on `store::Store` with a `context::Ctx`). `error` turns every failure into OCI error
//! JSON exactly once. `settings` holds what every connection shares and what SIGHUP reloads;
//! `limits` the bounds on connections and transfers; `body` streams blobs to clients.

pub mod access_log;
pub mod auth;
pub mod authn;
pub mod authz;
pub mod body;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod handlers;
pub mod limits;
pub mod query;
pub mod router;
pub mod server;
pub mod service;
pub mod settings;
pub mod tls;
pub mod url_rules;

use http::HeaderName;

pub use settings::State;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
