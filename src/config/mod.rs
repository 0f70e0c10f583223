//! Configuration: a subset of CNCF Distribution's `config.yml`, the `REGISTRY_*` environment
//! overrides, and embedded defaults (listen on `:5000`, data in `./pier-data`).
//!
//! - `tree`: the file parsed by `yaml-rust2`, the environment merged in, and the serde
//!   deserializer that applies Distribution's leniencies and reports unknown keys.
//! - `schema`: the typed sections of `config.yml` and their resolution into [`Config`].
//! - `reload`: which settings a SIGHUP applies live and which wait for a restart.
//!
//! Every key in the file or the environment is either understood, reported as a Distribution
//! key that pier does not use, or reported as unknown (named by its dotted key or by its
//! variable); a value of the wrong kind is an error naming its key. What the file holds beyond
//! that (further YAML documents, a key repeated in another case, a header HTTP does not allow)
//! is warned about: nothing is dropped silently. An empty value (`~`) leaves the default.
//! `REGISTRY_*` variables that are not UTF-8 are errors; other variables are not looked at.

mod reload;
mod schema;
mod tree;

use std::cell::RefCell;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::core::access::AccessRule;
pub use reload::{LiveSettings, Reload};
use tree::{KeyError, Node, NodeDeserializer, Origins};

/// The settings pier runs with, resolved from the file, the environment and the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// `storage.filesystem.rootdirectory`
    pub root: PathBuf,
    /// `storage.filesystem.reserve` (pier): bytes to keep free on the data directory's
    /// filesystem; below it uploads are refused (507). 0 disables it.
    pub free_space_reserve: u64,
    /// `storage.filesystem.migrate` (pier): at start, import the registry:2 data found in the
    /// root directory (`docker/registry/v2`) unless it was imported once (`store::migrate`).
    pub migrate: bool,
    /// `storage.delete.enabled`
    pub delete_enabled: bool,
    /// `http.addr`, e.g. `:5000` or `127.0.0.1:0`
    pub addr: String,
    /// `http.prefix` normalised to `""` or `/something` (no trailing slash).
    pub prefix: String,
    /// `http.host`: the external URL base for `Location` headers, e.g. `https://reg.example`.
    pub host: Option<String>,
    /// `http.relativeurls`
    pub relative_urls: bool,
    /// `http.headers`: added to every response.
    pub headers: Vec<(String, String)>,
    /// `log.level`
    pub log_level: log::LevelFilter,
    /// `log.accesslog.disabled` (inverted): one log line per request.
    pub access_log: bool,
    /// `log.formatter`: `text` (default) or `json`, for stderr (the journal gets fields).
    pub log_format: crate::logging::Format,
    /// `http.draintimeout`: how long in-flight requests may run after SIGTERM.
    pub drain_timeout: Duration,
    /// `http.idletimeout` (pier): a connection with no bytes moving for this long is closed.
    /// Never a cap on total request time.
    pub idle_timeout: Duration,
    /// `storage.digests.blake3` (pier): accept `blake3:` digests (image-spec main only).
    pub blake3: bool,
    /// `storage.maintenance.uploadpurging`: purge uploads idle longer than `age`, every
    /// `interval` (`None` when disabled).
    pub upload_purging: Option<UploadPurging>,
    /// `storage.maintenance.gc` (pier): garbage collection every `interval` (`None`: only on
    /// demand, `pier gc`).
    pub gc_schedule: Option<GcSchedule>,
    /// `storage.maintenance.scrub` (pier): the background scrub (`None`: only `pier scrub`).
    pub scrub_schedule: Option<ScrubSchedule>,
    /// `auth.htpasswd`: basic authentication against an htpasswd file of bcrypt entries (and
    /// legacy ones where allowed).
    pub htpasswd: Option<HtpasswdConfig>,
    /// `quotas` (pier): size limits per repository glob (first match applies; empty: none).
    pub quotas: Vec<crate::core::quota::QuotaRule>,
    /// `retention` (pier): which tags `pier retention` drops, per repository glob.
    pub retention: Vec<crate::core::retention::RetentionPolicy>,
    /// `access` (pier): rules granting pull/push/delete per user and repository glob.
    pub access: Option<Vec<AccessRule>>,
    /// `http.tls`: serve HTTPS with these PEM files.
    pub tls: Option<TlsConfig>,
    /// `storage.maintenance.readonly.enabled`: refuse every write.
    pub read_only: bool,
    /// `limits` (pier): bounds on connections, streams and transfers.
    pub limits: Limits,
    /// `validation.manifests.urls`: which URLs the layers of a pushed manifest may name.
    pub manifest_urls: ManifestUrls,
}

/// `validation.manifests.urls`: regular expressions (Go syntax) a layer URL must match one of
/// (`allow`; empty: any `http`/`https` URL) and must match none of (`deny`). Checked when the
/// configuration is read, so a bad pattern stops pier instead of failing open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestUrls {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("./pier-data"),
            free_space_reserve: DEFAULT_FREE_SPACE_RESERVE,
            migrate: true,
            delete_enabled: false,
            addr: String::from(":5000"),
            prefix: String::new(),
            host: None,
            relative_urls: false,
            headers: Vec::new(),
            log_level: log::LevelFilter::Info,
            access_log: true,
            log_format: crate::logging::Format::Text,
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            blake3: false,
            upload_purging: Some(DEFAULT_UPLOAD_PURGING),
            gc_schedule: None,
            scrub_schedule: None,
            quotas: Vec::new(),
            retention: Vec::new(),
            htpasswd: None,
            access: None,
            tls: None,
            read_only: false,
            limits: Limits::default(),
            manifest_urls: ManifestUrls::default(),
        }
    }
}

/// `limits` (pier): what one client, or all of them together, may hold at once. The defaults
/// suit a Raspberry Pi: a stalled download costs at most ~64 KiB and no thread, so even the
/// defaults reached by an attacker stay within a few tens of MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `limits.connections`: open connections, all clients together. Past it a new connection
    /// is answered `503` and closed.
    pub connections: usize,
    /// `limits.connectionsperclient`: open connections of one client address (an IPv6 client's
    /// /64). Past it a new connection is answered `429` and closed.
    pub connections_per_client: usize,
    /// `limits.streamsperconnection`: concurrent HTTP/2 streams on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub streams_per_connection: u32,
    /// `limits.transfers`: blob downloads and upload bodies in flight, all clients together.
    /// Past it a new one is answered `503` with `Retry-After`; other requests go on.
    pub transfers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { connections: 1024, connections_per_client: 256, streams_per_connection: 64, transfers: 256 }
    }
}

/// When abandoned uploads are removed (Distribution's `storage.maintenance.uploadpurging`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    pub age: Duration,
    pub interval: Duration,
}

/// Scheduled garbage collection (`storage.maintenance.gc`, pier; see `store::gc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSchedule {
    pub interval: Duration,
    /// Blob links younger than this are kept.
    pub grace: Duration,
    /// Also collect untagged manifests that nothing tagged needs.
    pub untagged: bool,
}

/// Daily, with an hour's grace, tagged manifests only (when enabled; it is off by default).
pub const DEFAULT_GC_SCHEDULE: GcSchedule =
    GcSchedule { interval: Duration::from_secs(24 * 3600), grace: Duration::from_secs(3600), untagged: false };

/// The background scrub (`storage.maintenance.scrub`, pier; see `store::scrub`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubSchedule {
    /// A scrub starts when the last complete one finished this long ago.
    pub interval: Duration,
    /// Bytes read per second, at most.
    pub rate: u64,
}

/// Weekly, at 8 MiB/s (when enabled; it is off by default).
pub const DEFAULT_SCRUB_SCHEDULE: ScrubSchedule =
    ScrubSchedule { interval: Duration::from_secs(7 * 24 * 3600), rate: 8 * 1024 * 1024 };

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtpasswdConfig {
    pub realm: String,
    pub path: PathBuf,
    /// `auth.htpasswd.legacyhashes` (pier): the weak schemes of existing files accepted besides
    /// bcrypt (none by default: such an entry stops pier, naming this key).
    pub legacy_hashes: Vec<crate::htpasswd::LegacyScheme>,
    /// `auth.htpasswd.upgradelegacy` (pier): rewrite a legacy entry as bcrypt in the file at its
    /// user's next successful login (off by default: it rewrites the user's file).
    pub upgrade_legacy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to (mTLS); empty = no client auth.
    pub client_cas: Vec<PathBuf>,
}

/// `storage.filesystem.reserve` unless configured: room for the metadata database, the system
/// and the operator on a small SD card.
pub const DEFAULT_FREE_SPACE_RESERVE: u64 = 256 << 20;

/// Distribution's defaults: uploads older than a week, checked daily.
pub const DEFAULT_UPLOAD_PURGING: UploadPurging =
    UploadPurging { age: Duration::from_secs(168 * 3600), interval: Duration::from_secs(24 * 3600) };

/// A loaded configuration and what loading it found worth a warning (to be logged once logging
/// is up).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax error with 1-based line and column.
    #[error("config is not valid YAML at line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    /// A known key with a value of the wrong kind, from the file or from `variable`.
    #[error("{}config key {key}: {message}", variable.as_ref().map(|v| format!("environment variable {v}, ")).unwrap_or_default())]
    Value { key: String, variable: Option<String>, message: String },
    /// A `REGISTRY_*` variable whose name or value is not UTF-8 (shown with replacement
    /// characters).
    #[error("environment variable {name} is not valid UTF-8")]
    NotUtf8 { name: String },
    /// The file is not a configuration at all (empty, not text, not a mapping, no `version`):
    /// what a file being rewritten holds after a power loss. Starting on defaults would serve the
    /// data directory without authentication, so pier refuses.
    #[error("config file {} {why}; refusing to start on defaults (a config.yml is a YAML mapping that starts with `version: 0.1`)", path.display())]
    NotAConfig { path: PathBuf, why: &'static str },
}

/// The prefix of Distribution's environment overrides.
const ENV_PREFIX: &str = "REGISTRY_";

impl Config {
    /// Loads `path` (or the embedded defaults when `None`), then applies `REGISTRY_*` overrides
    /// from `env` (e.g. `std::env::vars_os()`).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Loaded, ConfigError> {
        let Some(path) = path else { return Config::from_sources(None, env) };
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_file_contents(path, &bytes, env)
    }

    /// [`Config::load`] of a file already read: `bytes` are its contents, `path` only names it in
    /// errors. Everything `load` checks except reading the file (no file-system access: the
    /// config fuzz target drives this).
    pub fn from_file_contents(
        path: &Path,
        bytes: &[u8],
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Loaded, ConfigError> {
        let not_a_config = |why| ConfigError::NotAConfig { path: path.to_path_buf(), why };
        if bytes.contains(&0) {
            return Err(not_a_config("holds NUL bytes"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| not_a_config("is not UTF-8 text"))?;
        // Values first (their errors name the key), then the shape of the whole file.
        let loaded = Config::from_sources(Some(text), env)?;
        document_shape(text).map_err(not_a_config)?;
        Ok(loaded)
    }

    /// The configuration from the file's text (`None`: no file, the defaults) and `env`, without
    /// the checks of the whole file that [`Config::from_file_contents`] adds.
    pub fn from_sources(
        yaml: Option<&str>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let file = match yaml {
            Some(text) => Some(parse_yaml(text, &mut warnings)?),
            None => None,
        };
        let overrides = env_overrides(env)?;
        let mut merged = file.clone().unwrap_or(Node::Map(Vec::new()));
        for (path, _, value) in &overrides {
            merged.merge(Node::at_path(path, Node::Str(value.clone())));
        }
        let env: Vec<(String, String)> = overrides.into_iter().map(|(path, var, _)| (path, var)).collect();
        let origins = Origins { file: file.as_ref(), env: &env, warnings: RefCell::new(Vec::new()) };
        let blame = |e: KeyError| {
            let variable = origins.variable_for(&e.key).map(str::to_string);
            let key = if e.key.is_empty() { String::from("(top level)") } else { e.key };
            ConfigError::Value { key, variable, message: e.message }
        };
        let document =
            serde::Deserialize::deserialize(NodeDeserializer { node: &merged, path: String::new(), origins: &origins })
                .map_err(blame)?;
        warnings.append(&mut origins.warnings.borrow_mut());
        let config = schema::Document::resolve(document, &mut warnings).map_err(blame)?;
        config.validate()?;
        Ok(Loaded { config, warnings })
    }

    /// Cross-key checks, after every source has been applied.
    fn validate(&self) -> Result<(), ConfigError> {
        let missing = |key: &str, why: &str| {
            Err(ConfigError::Value { key: key.to_string(), variable: None, message: why.to_string() })
        };
        if let Some(h) = &self.htpasswd {
            if h.path.as_os_str().is_empty() {
                return missing("auth.htpasswd.path", "is required with htpasswd authentication");
            }
        }
        if self.access.is_some() && self.htpasswd.is_none() {
            return missing("access", "needs authentication (auth.htpasswd) to be configured");
        }
        if let Some(t) = &self.tls {
            if t.certificate.as_os_str().is_empty() || t.key.as_os_str().is_empty() {
                return missing("http.tls", "needs both certificate and key");
            }
        }
        Ok(())
    }
}

/// Parses the file's text into a tree (an empty file is an empty mapping).
fn parse_yaml(text: &str, warnings: &mut Vec<String>) -> Result<Node, ConfigError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| ConfigError::Syntax {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if docs.len() > 1 {
        warnings.push(format!("the config file holds {} YAML documents; only the first is used", docs.len()));
    }
    Ok(match docs.first() {
        None => Node::Map(Vec::new()),
        Some(doc) => match Node::from_yaml(doc, "", warnings) {
            Node::Null => Node::Map(Vec::new()),
            node => node,
        },
    })
}

/// Why `text` is not a configuration file, if it is not: it must be a YAML mapping with a
/// `version` key, as Distribution requires (an empty file, or one of comments only, is not).
fn document_shape(text: &str) -> Result<(), &'static str> {
    let docs = YamlLoader::load_from_str(text).map_err(|_| "is not valid YAML")?;
    match docs.first() {
        None | Some(Yaml::Null) => Err("is empty"),
        Some(Yaml::Hash(map)) if map.is_empty() => Err("is empty"),
        Some(Yaml::Hash(map)) => {
            let has_version = map.keys().any(|k| matches!(k, Yaml::String(s) if s.eq_ignore_ascii_case("version")));
            if has_version {
                Ok(())
            } else {
                Err("has no `version` key")
            }
        }
        Some(_) => Err("is not a mapping of keys to values"),
    }
}

/// The `REGISTRY_*` variables as `(dotted key, variable, value)`, sorted by name so that a
/// section (`REGISTRY_AUTH`) is applied before the keys inside it (`REGISTRY_AUTH_HTPASSWD_PATH`).
fn env_overrides(
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String, String)>, ConfigError> {
    let mut overrides = Vec::new();
    for (name, value) in env {
        if !name.as_bytes().starts_with(ENV_PREFIX.as_bytes()) {
            continue;
        }
        let name = name.into_string().map_err(|n| ConfigError::NotUtf8 { name: n.to_string_lossy().into_owned() })?;
        let value = value.into_string().map_err(|_| ConfigError::NotUtf8 { name: name.clone() })?;
        let key = name[ENV_PREFIX.len()..].to_ascii_lowercase().replace('_', ".");
        overrides.push((key, name, value));
    }
    overrides.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(overrides)
}

#[cfg(test)]
mod tests;
