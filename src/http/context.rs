//! [`Ctx`]: what a handler knows about its request besides the body (who asks, the headers,
//! the decoded query, the settings snapshot), and the URLs it hands back to clients.
//!
//! By the time a handler gets a `Ctx`, the caller is authenticated and authorized and the
//! registry's policy allows the operation (see `dispatch`).

use std::sync::Arc;

use http::Method;

use super::error::HttpError;
use super::query::Query;
use super::settings::{Settings, State};
use crate::core::access::{Action, Identity};
use crate::core::RepoName;

pub struct Ctx<'a> {
    pub state: &'a State,
    pub settings: Arc<Settings>,
    pub identity: Identity,
    pub method: Method,
    pub headers: http::HeaderMap,
    /// The request URI's authority (HTTP/2 `:authority`), if any.
    pub authority: Option<String>,
    pub query: Query,
}

impl Ctx<'_> {
    /// Whether the caller may do `action` to `repo`.
    pub fn may(&self, action: Action, repo: &str) -> bool {
        self.settings.access.allows(&self.identity, action, repo)
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key)
    }
    pub fn query_all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.query.all(key)
    }
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A URL for `path` (which starts with `/v2/`) as clients should follow it: relative when
    /// `http.relativeurls`, else based on `http.host`, else on the request's forwarded or
    /// `Host` headers. `http.prefix` is always included.
    pub fn url(&self, path: &str) -> String {
        let cfg = &self.state.config;
        let prefix = cfg.prefix.as_str();
        if cfg.relative_urls {
            return format!("{prefix}{path}");
        }
        if let Some(host) = &cfg.host {
            return format!("{host}{prefix}{path}");
        }
        let first = |v: &str| v.split(',').next().unwrap_or("").trim().to_string();
        let proto = self
            .header("x-forwarded-proto")
            .map(first)
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| if cfg.tls.is_some() { "https".into() } else { "http".into() });
        // HTTP/2 requests carry the host in the `:authority` pseudo-header, not in `Host`.
        let host = self
            .header("x-forwarded-host")
            .map(first)
            .or_else(|| self.header(http::header::HOST).map(str::to_string))
            .or_else(|| self.authority.clone());
        match host {
            Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => {
                format!("{proto}://{h}{prefix}{path}")
            }
            _ => format!("{prefix}{path}"),
        }
    }

    pub fn repo(&self, name: &str) -> Result<RepoName, HttpError> {
        Ok(RepoName::parse(name)?)
    }
}
