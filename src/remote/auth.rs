//! Authentication against a remote registry: anonymous, HTTP Basic, and Bearer tokens from the
//! registry's token service (the Docker/Distribution token flow).
//!
//! The flow: a request goes out with what is known for its scope (nothing, Basic credentials,
//! or a cached token); a 401 names the scheme in `WWW-Authenticate`. For `Bearer realm=...,
//! service=...,scope=...` a token is fetched (`GET realm?service=...&scope=...`, with Basic
//! credentials when the user gave some), cached per scope until it expires, and the request is
//! sent once more; for `Basic` the request is sent once more with the credentials.
//!
//! Invariants:
//! - The password and tokens live only in [`Secret`]s (their `Debug` shows `***`) and in the
//!   `Authorization` headers built from them; no error or log line contains them.
//! - Credentials and tokens go only to the registry's own origin and to the token realm it
//!   names; never to a redirect target on another origin (see `RemoteRegistry::get`), and Basic
//!   credentials never go to a plain-`http` realm of an `https` registry (a downgrade).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

use super::error::RemoteError;
use super::transport::Transport;
use super::{error_detail, MAX_JSON_BYTES};

/// A password or a token: shown as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user name and its password (`--username`, `--password-stdin` / `PIER_REMOTE_PASSWORD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    fn basic_header(&self) -> Result<HeaderValue, RemoteError> {
        let raw = format!("{}:{}", self.username, self.password.expose());
        let mut value =
            HeaderValue::try_from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
                .map_err(|_| RemoteError::Setup(String::from("the credentials cannot be sent in a header")))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// The challenges of every `WWW-Authenticate` header of a 401 (unknown schemes skipped).
pub(super) fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    let mut found = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        found.extend(parse_challenge_line(text));
    }
    found
}

/// `Scheme k=v, k="v", Scheme2 ...` (RFC 7235; parameters may be quoted with `\` escapes).
fn parse_challenge_line(text: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: HashMap<String, String> = HashMap::new();
    let mut rest = text.trim();
    let finish = |scheme: &Option<String>, params: &mut HashMap<String, String>, out: &mut Vec<Challenge>| {
        match scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("basic") => out.push(Challenge::Basic),
            Some("bearer") => {
                if let Some(realm) = params.remove("realm") {
                    out.push(Challenge::Bearer {
                        realm,
                        service: params.remove("service"),
                        scope: params.remove("scope"),
                    });
                }
            }
            _ => {}
        }
        params.clear();
    };
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_end = rest.find(['=', ' ', ',', '\t']).unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start_matches([' ', '\t']);
        if token.is_empty() {
            break;
        }
        if let Some(value_part) = after.strip_prefix('=') {
            let value_part = value_part.trim_start_matches([' ', '\t']);
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end.min(quoted.len())..])
            } else {
                let end = value_part.find([',', ' ', '\t']).unwrap_or(value_part.len());
                (value_part[..end].to_string(), &value_part[end..])
            };
            params.insert(token.to_ascii_lowercase(), value);
            rest = remaining;
        } else {
            // A new scheme (token68 credentials are not used in challenges we act on).
            finish(&scheme, &mut params, &mut out);
            scheme = Some(token.to_string());
            rest = after;
        }
    }
    finish(&scheme, &mut params, &mut out);
    out
}

/// A token and when to stop using it.
struct CachedToken {
    value: Secret,
    until: Instant,
}

/// What the registry asked for last time.
#[derive(Clone, Debug)]
enum Scheme {
    /// Nothing asked yet (or nothing needed).
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct State {
    scheme: Scheme,
    /// Per scope (`repository:NAME:pull`, `registry:catalog:*`).
    tokens: HashMap<String, CachedToken>,
}

/// Credentials, the scheme the registry asked for, and the token cache.
pub(super) struct Auth {
    credentials: Option<Credentials>,
    /// Whether the registry itself is reached over TLS (Basic credentials never go to a plain
    /// `http` realm then).
    registry_is_https: bool,
    state: Mutex<State>,
}

/// The body of a token answer (`token` or, OAuth2-style, `access_token`).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens without `expires_in` live 60 s (the token specification's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

impl Auth {
    pub(super) fn new(credentials: Option<Credentials>, registry_is_https: bool) -> Auth {
        Auth {
            credentials,
            registry_is_https,
            state: Mutex::new(State { scheme: Scheme::Unknown, tokens: HashMap::new() }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `Authorization` header to send for `scope` now, if any (before any challenge: none;
    /// after a Basic challenge: the credentials; after a Bearer one: the scope's cached token,
    /// or a new one fetched from the realm).
    pub(super) async fn header_for(
        &self,
        transport: &Transport,
        scope: &str,
    ) -> Result<Option<HeaderValue>, RemoteError> {
        let scheme = self.state().scheme.clone();
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => self.credentials.as_ref().map(Credentials::basic_header).transpose(),
            Scheme::Bearer { realm, service } => {
                if let Some(token) = self.cached(scope) {
                    return bearer_header(&token).map(Some);
                }
                let token = self.fetch_token(transport, &realm, service.as_deref(), scope, scope).await?;
                bearer_header(&token).map(Some)
            }
        }
    }

    fn cached(&self, scope: &str) -> Option<Secret> {
        let state = self.state();
        state.tokens.get(scope).filter(|t| Instant::now() < t.until).map(|t| t.value.clone())
    }

    /// Acts on the challenges of a 401 to a request for `scope` that was sent with `sent`
    /// (whether it carried an `Authorization` header). `Ok(true)`: send the request again;
    /// `Ok(false)`: nothing more to try (the 401 stands; the caller reports it as denied).
    /// Callers act on at most one 401 per request, so a refused token is fetched again once.
    pub(super) async fn on_challenge(
        &self,
        transport: &Transport,
        challenges: &[Challenge],
        scope: &str,
        sent: bool,
    ) -> Result<bool, RemoteError> {
        if let Some(Challenge::Bearer { realm, service, scope: asked }) =
            challenges.iter().find(|c| matches!(c, Challenge::Bearer { .. }))
        {
            self.state().scheme = Scheme::Bearer { realm: realm.clone(), service: service.clone() };
            // The registry's scope is the precise one (it may name several actions); ours is
            // the cache key.
            let token_scope = asked.clone().unwrap_or_else(|| scope.to_string());
            self.fetch_token(transport, realm, service.as_deref(), &token_scope, scope).await?;
            return Ok(true);
        }
        if challenges.contains(&Challenge::Basic) {
            self.state().scheme = Scheme::Basic;
            return Ok(self.credentials.is_some() && !sent);
        }
        Ok(false)
    }

    /// Fetches a token for `scope` from `realm` (with Basic credentials if the user gave some)
    /// and caches it under `cache_key`.
    async fn fetch_token(
        &self,
        transport: &Transport,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        cache_key: &str,
    ) -> Result<Secret, RemoteError> {
        let what = format!("token for {scope}");
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (key, value) in [("service", service), ("scope", Some(scope).filter(|s| !s.is_empty()))] {
            if let Some(value) = value {
                url.push(sep);
                url.push_str(key);
                url.push('=');
                url.push_str(&percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string());
                sep = '&';
            }
        }
        let uri: Uri = url.parse().map_err(|_| RemoteError::Invalid {
            what: what.clone(),
            detail: format!("the registry names a token realm that is not a URL: {realm:?}"),
        })?;
        let realm_https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(RemoteError::Invalid {
                    what,
                    detail: format!("the token realm {realm:?} is not an http(s) URL"),
                })
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(credentials) = &self.credentials {
            if self.registry_is_https && !realm_https {
                return Err(RemoteError::Invalid {
                    what,
                    detail: format!("the registry asks for the credentials to be sent to {realm}, plain http: refused"),
                });
            }
            headers.insert(AUTHORIZATION, credentials.basic_header()?);
        }
        let service_what = format!("token service {realm}");
        let response = transport.get(&what, &uri, &headers).await?;
        let status = response.status();
        let body = transport.read_capped(&what, response.into_body(), MAX_JSON_BYTES).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_detail(&body);
            return Err(RemoteError::Denied {
                what: service_what,
                detail: if detail.is_empty() { status.to_string() } else { format!("{status}: {detail}") },
            });
        }
        if !status.is_success() {
            return Err(RemoteError::Status {
                what: service_what,
                status: status.as_u16(),
                detail: error_detail(&body),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| RemoteError::Invalid {
            what: service_what.clone(),
            detail: format!("not a token answer: {e}"),
        })?;
        let Some(token) = answer.token.filter(|t| !t.is_empty()).or(answer.access_token.filter(|t| !t.is_empty()))
        else {
            return Err(RemoteError::Invalid { what: service_what, detail: String::from("the answer holds no token") });
        };
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME).clamp(1, 86_400));
        let token = Secret::new(token);
        self.state().tokens.insert(
            cache_key.to_string(),
            CachedToken { value: token.clone(), until: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN) },
        );
        Ok(token)
    }
}

fn bearer_header(token: &Secret) -> Result<HeaderValue, RemoteError> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| RemoteError::Invalid {
        what: String::from("token"),
        detail: String::from("not a valid header value"),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// What stays literal in a query value: unreserved characters (RFC 3986).
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_quotes_escapes_and_several_schemes() {
        let got = parse_challenge_line(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push", Basic realm="x""#,
        );
        assert_eq!(
            got,
            vec![
                Challenge::Bearer {
                    realm: "https://auth.example/token".into(),
                    service: Some("registry.example".into()),
                    scope: Some("repository:a/b:pull,push".into())
                },
                Challenge::Basic
            ]
        );
        assert_eq!(parse_challenge_line(r#"basic realm="pier \"x\"""#), vec![Challenge::Basic]);
        assert_eq!(
            parse_challenge_line("Bearer realm=http://t/x"),
            vec![Challenge::Bearer { realm: "http://t/x".into(), service: None, scope: None }]
        );
        // A Bearer challenge without a realm is useless; garbage yields nothing.
        assert!(parse_challenge_line("Bearer service=x").is_empty());
        assert!(parse_challenge_line("=,=\"").is_empty());
        assert!(parse_challenge_line("").is_empty());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Credentials { username: "u".into(), password: Secret::new("hunter2".into()) };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
