//! The typed shape of `config.yml`: one struct per section, mirroring CNCF Distribution's
//! configuration (plus pier's own `access`, `storage.digests`, `http.idletimeout`,
//! `auth.htpasswd.legacyhashes` and `.upgradelegacy`, ...), and its resolution into [`Config`]
//! with the defaults filled in and every value checked.
//!
//! Every field is optional here (a key left out keeps its default); only the schema's field
//! names decide which keys are known (see `tree` for what happens to the others). Both the
//! schema and the resolution destructure exhaustively, so a key added here without being
//! resolved, or a `Config` field without a source, does not compile.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::tree::KeyError;
use super::{Config, GcSchedule, HtpasswdConfig, Limits, ManifestUrls, ScrubSchedule, TlsConfig, UploadPurging};
use crate::core::access::{AccessRule, Action};
use crate::core::duration;
use crate::core::quota::QuotaRule;
use crate::core::retention::RetentionPolicy;
use crate::htpasswd::LegacyScheme;
use crate::logging::Format;

#[derive(Deserialize)]
pub(super) struct Document {
    /// Distribution's config format version: accepted, not checked.
    version: Option<IgnoredAny>,
    log: Option<Log>,
    storage: Option<Storage>,
    http: Option<Http>,
    auth: Option<Auth>,
    access: Option<Vec<AccessRuleEntry>>,
    quotas: Option<Vec<QuotaEntry>>,
    retention: Option<Vec<RetentionEntry>>,
    limits: Option<LimitsSection>,
    validation: Option<Validation>,
}

#[derive(Deserialize, Default)]
struct Validation {
    manifests: Option<ManifestValidation>,
}

#[derive(Deserialize, Default)]
struct ManifestValidation {
    urls: Option<UrlPatterns>,
}

#[derive(Deserialize, Default)]
struct UrlPatterns {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

/// `limits` (pier).
#[derive(Deserialize, Default)]
struct LimitsSection {
    connections: Option<u64>,
    connectionsperclient: Option<u64>,
    streamsperconnection: Option<u64>,
    transfers: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Log {
    level: Option<String>,
    formatter: Option<String>,
    accesslog: Option<AccessLog>,
}

#[derive(Deserialize, Default)]
struct AccessLog {
    disabled: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Storage {
    filesystem: Option<Filesystem>,
    delete: Option<Switch>,
    maintenance: Option<Maintenance>,
    digests: Option<Digests>,
}

#[derive(Deserialize, Default)]
struct Filesystem {
    rootdirectory: Option<PathBuf>,
    /// pier: free space to keep (a size: bytes or `256MiB`, `1GB`; 0 disables).
    reserve: Option<String>,
    /// pier: import a registry:2 tree found in the root directory at start (default true).
    migrate: Option<bool>,
}

/// A section holding only `enabled`.
#[derive(Deserialize, Default)]
struct Switch {
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Maintenance {
    uploadpurging: Option<UploadPurgingSection>,
    readonly: Option<Switch>,
    /// pier: scheduled garbage collection.
    gc: Option<GcSection>,
    /// pier: the background scrub.
    scrub: Option<ScrubSection>,
}

/// `storage.maintenance.scrub` (pier).
#[derive(Deserialize, Default)]
struct ScrubSection {
    enabled: Option<bool>,
    interval: Option<String>,
    rate: Option<String>,
}

/// `storage.maintenance.gc` (pier).
#[derive(Deserialize, Default)]
struct GcSection {
    enabled: Option<bool>,
    interval: Option<String>,
    grace: Option<String>,
    untagged: Option<bool>,
}

#[derive(Deserialize, Default)]
struct UploadPurgingSection {
    enabled: Option<bool>,
    age: Option<String>,
    interval: Option<String>,
}

/// `storage.digests` (pier).
#[derive(Deserialize, Default)]
struct Digests {
    blake3: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Http {
    addr: Option<String>,
    prefix: Option<String>,
    host: Option<String>,
    relativeurls: Option<bool>,
    headers: Option<Headers>,
    draintimeout: Option<String>,
    /// pier
    idletimeout: Option<String>,
    tls: Option<Tls>,
}

#[derive(Deserialize, Default)]
struct Tls {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    clientcas: Option<Vec<PathBuf>>,
}

#[derive(Deserialize, Default)]
struct Auth {
    htpasswd: Option<Htpasswd>,
}

#[derive(Deserialize, Default)]
struct Htpasswd {
    realm: Option<String>,
    path: Option<PathBuf>,
    /// pier: weak schemes of existing files to accept (`[apr1, sha]`, or `apr1,sha`).
    legacyhashes: Option<Vec<String>>,
    /// pier: re-hash a legacy entry as bcrypt at its user's next successful login.
    upgradelegacy: Option<bool>,
}

/// One policy of `retention` (pier).
#[derive(Deserialize)]
struct RetentionEntry {
    repos: Option<String>,
    keep: Option<u64>,
    maxage: Option<String>,
    protect: Option<Vec<String>>,
}

/// One rule of `quotas` (pier).
#[derive(Deserialize)]
struct QuotaEntry {
    repos: Option<String>,
    size: Option<String>,
}

/// One rule of `access` (pier).
#[derive(Deserialize)]
struct AccessRuleEntry {
    user: Option<String>,
    repos: Option<Vec<String>>,
    actions: Option<Vec<String>>,
}

/// `http.headers`: header name to one value or a list of values, in document order.
struct Headers(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Headers, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Headers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of header names to lists of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers = Vec::new();
                while let Some(entry) = map.next_entry::<String, Vec<String>>()? {
                    headers.push(entry);
                }
                Ok(Headers(headers))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// What resolving found worth telling but not fatal.
pub(super) type Warnings = Vec<String>;

impl Document {
    /// The configuration this document describes, defaults filled in.
    pub(super) fn resolve(self, warnings: &mut Warnings) -> Result<Config, KeyError> {
        let defaults = Config::default();
        let Document { version, log, storage, http, auth, access, quotas, retention, limits, validation } = self;
        let _accepted_unchecked: Option<IgnoredAny> = version;
        let Log { level, formatter, accesslog } = log.unwrap_or_default();
        let AccessLog { disabled: access_log_disabled } = accesslog.unwrap_or_default();
        let Storage { filesystem, delete, maintenance, digests } = storage.unwrap_or_default();
        let Filesystem { rootdirectory, reserve, migrate } = filesystem.unwrap_or_default();
        let Switch { enabled: delete_enabled } = delete.unwrap_or_default();
        let Maintenance { uploadpurging, readonly, gc, scrub } = maintenance.unwrap_or_default();
        let UploadPurgingSection { enabled: purging_enabled, age: purging_age, interval: purging_interval } =
            uploadpurging.unwrap_or_default();
        let Switch { enabled: read_only } = readonly.unwrap_or_default();
        let Digests { blake3 } = digests.unwrap_or_default();
        let Http { addr, prefix, host, relativeurls, headers, draintimeout, idletimeout, tls } =
            http.unwrap_or_default();
        let Validation { manifests } = validation.unwrap_or_default();
        let ManifestValidation { urls } = manifests.unwrap_or_default();
        let UrlPatterns { allow, deny } = urls.unwrap_or_default();
        let manifest_urls = ManifestUrls {
            allow: url_patterns("validation.manifests.urls.allow", allow.unwrap_or_default())?,
            deny: url_patterns("validation.manifests.urls.deny", deny.unwrap_or_default())?,
        };
        let LimitsSection { connections, connectionsperclient, streamsperconnection, transfers } =
            limits.unwrap_or_default();
        let limits = {
            let default = defaults.limits;
            Limits {
                connections: count("limits.connections", connections, default.connections)?,
                connections_per_client: count(
                    "limits.connectionsperclient",
                    connectionsperclient,
                    default.connections_per_client,
                )?,
                streams_per_connection: count(
                    "limits.streamsperconnection",
                    streamsperconnection,
                    default.streams_per_connection,
                )?,
                transfers: count("limits.transfers", transfers, default.transfers)?,
            }
        };

        let upload_purging = {
            let default = super::DEFAULT_UPLOAD_PURGING;
            let age = purging_age
                .map(|a| go_duration("storage.maintenance.uploadpurging.age", &a, warnings))
                .transpose()?
                .unwrap_or(default.age);
            let interval = purging_interval
                .map(|i| go_duration("storage.maintenance.uploadpurging.interval", &i, warnings))
                .transpose()?
                .unwrap_or(default.interval);
            if interval.is_zero() {
                return Err(KeyError::new("storage.maintenance.uploadpurging.interval", "must be longer than zero"));
            }
            purging_enabled.unwrap_or(true).then_some(UploadPurging { age, interval })
        };
        let gc_schedule = {
            let GcSection { enabled, interval, grace, untagged } = gc.unwrap_or_default();
            let default = super::DEFAULT_GC_SCHEDULE;
            let interval = interval
                .map(|i| go_duration("storage.maintenance.gc.interval", &i, warnings))
                .transpose()?
                .unwrap_or(default.interval);
            if interval.is_zero() {
                return Err(KeyError::new("storage.maintenance.gc.interval", "must be longer than zero"));
            }
            let grace = grace
                .map(|g| go_duration("storage.maintenance.gc.grace", &g, warnings))
                .transpose()?
                .unwrap_or(default.grace);
            enabled.unwrap_or(false).then_some(GcSchedule {
                interval,
                grace,
                untagged: untagged.unwrap_or(default.untagged),
            })
        };
        let scrub_schedule = {
            let ScrubSection { enabled, interval, rate } = scrub.unwrap_or_default();
            let default = super::DEFAULT_SCRUB_SCHEDULE;
            let interval = interval
                .map(|i| go_duration("storage.maintenance.scrub.interval", &i, warnings))
                .transpose()?
                .unwrap_or(default.interval);
            if interval.is_zero() {
                return Err(KeyError::new("storage.maintenance.scrub.interval", "must be longer than zero"));
            }
            let rate = rate.map(|r| size("storage.maintenance.scrub.rate", &r)).transpose()?.unwrap_or(default.rate);
            if rate == 0 {
                return Err(KeyError::new("storage.maintenance.scrub.rate", "must be more than zero bytes per second"));
            }
            enabled.unwrap_or(false).then_some(ScrubSchedule { interval, rate })
        };
        let tls = tls.map(|Tls { certificate, key, clientcas }| {
            let given = certificate.is_some() || key.is_some() || clientcas.is_some();
            given.then(|| TlsConfig {
                certificate: certificate.unwrap_or_default(),
                key: key.unwrap_or_default(),
                client_cas: clientcas.unwrap_or_default(),
            })
        });
        let htpasswd = auth
            .and_then(|Auth { htpasswd }| htpasswd)
            .map(|Htpasswd { realm, path, legacyhashes, upgradelegacy }| {
                let legacy_hashes = legacy_schemes(legacyhashes.unwrap_or_default())?;
                let upgrade_legacy = upgradelegacy.unwrap_or(false);
                if upgrade_legacy && legacy_hashes.is_empty() {
                    warnings.push(String::from(
                        "config key auth.htpasswd.upgradelegacy: has no effect without auth.htpasswd.legacyhashes",
                    ));
                }
                Ok::<_, KeyError>(HtpasswdConfig {
                    realm: realm.unwrap_or_else(|| String::from("pier")),
                    path: path.unwrap_or_default(),
                    legacy_hashes,
                    upgrade_legacy,
                })
            })
            .transpose()?;
        Ok(Config {
            root: rootdirectory.unwrap_or(defaults.root),
            free_space_reserve: reserve
                .map(|r| size("storage.filesystem.reserve", &r))
                .transpose()?
                .unwrap_or(defaults.free_space_reserve),
            migrate: migrate.unwrap_or(defaults.migrate),
            delete_enabled: delete_enabled.unwrap_or(defaults.delete_enabled),
            addr: addr.unwrap_or(defaults.addr),
            prefix: prefix.map(|p| normalized_prefix(&p)).unwrap_or(defaults.prefix),
            host: host.map(|h| h.trim_end_matches('/').to_string()).filter(|h| !h.is_empty()),
            relative_urls: relativeurls.unwrap_or(defaults.relative_urls),
            headers: headers.map_or(defaults.headers, |Headers(h)| valid_headers(h, warnings)),
            log_level: level.map(|l| log_level(&l)).transpose()?.unwrap_or(defaults.log_level),
            access_log: access_log_disabled.map_or(defaults.access_log, |disabled| !disabled),
            log_format: formatter.map(|f| log_format(&f)).transpose()?.unwrap_or(defaults.log_format),
            drain_timeout: draintimeout
                .map(|d| go_duration("http.draintimeout", &d, warnings))
                .transpose()?
                .unwrap_or(defaults.drain_timeout),
            idle_timeout: idletimeout
                .map(|d| go_duration("http.idletimeout", &d, warnings))
                .transpose()?
                .unwrap_or(defaults.idle_timeout),
            blake3: blake3.unwrap_or(defaults.blake3),
            upload_purging,
            gc_schedule,
            scrub_schedule,
            htpasswd,
            access: access.map(access_rules).transpose()?,
            quotas: quotas.map(quota_rules).transpose()?.unwrap_or_default(),
            retention: retention.map(|r| retention_policies(r, warnings)).transpose()?.unwrap_or_default(),
            tls: tls.flatten(),
            read_only: read_only.unwrap_or(defaults.read_only),
            limits,
            manifest_urls,
        })
    }
}

/// `auth.htpasswd.legacyhashes`: scheme names, each item possibly a comma-separated list (as a
/// `REGISTRY_*` variable gives it), without repeats, in a fixed order.
fn legacy_schemes(items: Vec<String>) -> Result<Vec<LegacyScheme>, KeyError> {
    let mut schemes = Vec::new();
    for name in items.iter().flat_map(|i| i.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
        let scheme = LegacyScheme::from_config_name(name).ok_or_else(|| {
            KeyError::new(
                "auth.htpasswd.legacyhashes",
                format!("{name:?} is not a scheme pier can accept: expected apr1 (MD5-apr1) and/or sha ({{SHA}}); plain-text and crypt(3) DES entries are never accepted"),
            )
        })?;
        schemes.push(scheme);
    }
    schemes.sort_unstable();
    schemes.dedup();
    Ok(schemes)
}

/// Regular expressions that must compile (a bad pattern is an error, never ignored).
fn url_patterns(key: &str, patterns: Vec<String>) -> Result<Vec<String>, KeyError> {
    for p in &patterns {
        regex_lite::Regex::new(p)
            .map_err(|e| KeyError::new(key, format!("{p:?} is not a valid regular expression: {e}")))?;
    }
    Ok(patterns)
}

/// A count of at least 1 (`default` when the key is absent).
fn count<T: TryFrom<u64>>(key: &str, value: Option<u64>, default: T) -> Result<T, KeyError> {
    match value {
        None => Ok(default),
        Some(0) => Err(KeyError::new(key, "must be at least 1")),
        Some(n) => T::try_from(n).map_err(|_| KeyError::new(key, format!("{n} is too large"))),
    }
}

/// `http.headers` as (name, value) pairs; a name or value that HTTP does not allow is left out
/// with a warning.
fn valid_headers(headers: Vec<(String, Vec<String>)>, warnings: &mut Warnings) -> Vec<(String, String)> {
    let mut valid = Vec::new();
    for (name, values) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            warnings.push(format!("config key http.headers.{name}: not a valid header name; ignored"));
            continue;
        }
        for value in values {
            if http::HeaderValue::from_str(&value).is_err() {
                warnings
                    .push(format!("config key http.headers.{name}: {value:?} is not a valid header value; ignored"));
                continue;
            }
            valid.push((name.clone(), value));
        }
    }
    valid
}

/// `http.prefix` as `""` or `/something` (no trailing slash).
fn normalized_prefix(p: &str) -> String {
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        String::new()
    } else if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

fn log_level(text: &str) -> Result<log::LevelFilter, KeyError> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "error" | "fatal" | "panic" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return Err(KeyError::new("log.level", "expected error, warn, info, debug or trace")),
    })
}

fn log_format(text: &str) -> Result<Format, KeyError> {
    match text {
        "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        "logstash" => Err(KeyError::new("log.formatter", "logstash is not supported; use text or json")),
        _ => Err(KeyError::new("log.formatter", "expected text or json")),
    }
}

/// A duration as Distribution reads it into a Go `time.Duration`: Go's syntax (`1h30m`,
/// `500ms`, `1.5h`), or a bare integer, which Go takes as nanoseconds.
fn go_duration(key: &str, text: &str, warnings: &mut Warnings) -> Result<Duration, KeyError> {
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let nanos = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let nanos: i64 = text.parse().map_err(|_| KeyError::new(key, format!("{text} nanoseconds is too long")))?;
        if nanos != 0 {
            warnings.push(format!(
                "config key {key}: {text} without a unit means {text} nanoseconds (as in Distribution); \
                 write e.g. {text}s for seconds"
            ));
        }
        nanos
    } else {
        duration::parse(text).map_err(|e| {
            KeyError::new(key, format!("{text:?} is {e}: expected a duration such as 30s, 1h30m or 500ms"))
        })?
    };
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| KeyError::new(key, "must not be negative"))
}

/// A size in bytes (`268435456`, `256MiB`, `1GB`; see `core::size`).
fn size(key: &str, text: &str) -> Result<u64, KeyError> {
    crate::core::size::parse(text)
        .map_err(|e| KeyError::new(key, format!("{text:?} is {e}: expected e.g. 268435456, 256MiB or 1GB")))
}

fn retention_policies(entries: Vec<RetentionEntry>, warnings: &mut Warnings) -> Result<Vec<RetentionPolicy>, KeyError> {
    let bad = |message: String| KeyError::new("retention", message);
    entries
        .into_iter()
        .enumerate()
        .map(|(i, RetentionEntry { repos, keep, maxage, protect })| {
            let repos = repos.ok_or_else(|| bad(format!("policy {i} has no repos")))?;
            let max_age_secs = match maxage {
                None => None,
                // Days are what people think in for retention; Go durations stop at hours.
                Some(text) => Some(match text.trim().strip_suffix('d').and_then(|d| d.parse::<u64>().ok()) {
                    Some(days) => days.saturating_mul(86_400),
                    None => go_duration("retention.maxage", &text, warnings)?.as_secs(),
                }),
            };
            if keep.is_none() && max_age_secs.is_none() {
                return Err(bad(format!("policy {i} ({repos}) has neither keep nor maxage: it would drop nothing")));
            }
            Ok(RetentionPolicy { repos, keep, max_age_secs, protect: protect.unwrap_or_default() })
        })
        .collect()
}

fn quota_rules(entries: Vec<QuotaEntry>) -> Result<Vec<QuotaRule>, KeyError> {
    let bad = |message: String| KeyError::new("quotas", message);
    entries
        .into_iter()
        .enumerate()
        .map(|(i, QuotaEntry { repos, size: text })| {
            let repos = repos.ok_or_else(|| bad(format!("rule {i} has no repos")))?;
            let text = text.ok_or_else(|| bad(format!("rule {i} has no size")))?;
            let bytes = crate::core::size::parse(&text)
                .map_err(|e| bad(format!("rule {i}: size {text:?} is {e}: expected e.g. 10GiB, 500MiB or 1GB")))?;
            Ok(QuotaRule { repos, bytes })
        })
        .collect()
}

fn access_rules(entries: Vec<AccessRuleEntry>) -> Result<Vec<AccessRule>, KeyError> {
    let bad = |message: String| KeyError::new("access", message);
    entries
        .into_iter()
        .enumerate()
        .map(|(i, AccessRuleEntry { user, repos, actions })| {
            let user = user.ok_or_else(|| bad(format!("rule {i} has no user")))?;
            let repos = repos.ok_or_else(|| bad(format!("rule {i} has no repos")))?;
            let actions = actions
                .ok_or_else(|| bad(format!("rule {i} has no actions")))?
                .iter()
                .map(|a| {
                    Action::parse(a).ok_or_else(|| bad(format!("rule {i}: unknown action {a:?} (pull, push, delete)")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(AccessRule { user, repos, actions })
        })
        .collect()
}
