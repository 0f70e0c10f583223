//! Configuration: a subset of CNCF Distribution's `config.yml`, the `REGISTRY_*` environment
//! overrides, and embedded defaults (listen on `:5000`, data in `./pier-data`).
//!
//! Every key is either understood, deliberately ignored with a warning that says so, or unknown
//! with a warning naming it: nothing is silently dropped.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::core::access::{AccessRule, Action};

#[derive(Clone, Debug)]
pub struct Config {
    /// `storage.filesystem.rootdirectory`
    pub root: PathBuf,
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
    /// `auth.htpasswd`: basic authentication against an htpasswd file of bcrypt entries.
    pub htpasswd: Option<HtpasswdConfig>,
    /// `access` (pier): rules granting pull/push/delete per user and repository glob.
    pub access: Option<Vec<AccessRule>>,
    /// `http.tls`: serve HTTPS with these PEM files.
    pub tls: Option<TlsConfig>,
    /// `storage.maintenance.readonly.enabled`: refuse every write.
    pub read_only: bool,
    /// Problems found while loading, to be logged once logging is up.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("./pier-data"),
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
            htpasswd: None,
            access: None,
            tls: None,
            read_only: false,
            warnings: Vec::new(),
        }
    }
}

/// When abandoned uploads are removed (Distribution's `storage.maintenance.uploadpurging`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    pub age: Duration,
    pub interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtpasswdConfig {
    pub realm: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to (mTLS); empty = no client auth.
    pub client_cas: Vec<PathBuf>,
}

/// Distribution's defaults: uploads older than a week, checked daily.
pub const DEFAULT_UPLOAD_PURGING: UploadPurging =
    UploadPurging { age: Duration::from_secs(168 * 3600), interval: Duration::from_secs(24 * 3600) };

#[derive(Debug)]
pub enum ConfigError {
    Read(PathBuf, std::io::Error),
    /// YAML syntax error with 1-based line and column.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A known key with a value of the wrong kind.
    Value {
        key: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(p, e) => write!(f, "cannot read config file {}: {e}", p.display()),
            ConfigError::Syntax { line, column, message } => {
                write!(f, "config is not valid YAML at line {line}, column {column}: {message}")
            }
            ConfigError::Value { key, message } => write!(f, "config key {key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Keys that exist in Distribution but mean nothing here: accepted with a warning.
const IGNORED: &[&str] = &[
    "storage.cache",
    "storage.redirect",
    "http.secret",
    "http.debug",
    "log.fields",
    "health",
    "notifications",
    "storage.maintenance.uploadpurging.dryrun",
    "http.http2",
];

impl Config {
    /// Loads `path` (or the embedded defaults when `None`), then applies `REGISTRY_*` overrides
    /// from `env`.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
            cfg.apply_yaml(&text)?;
        }
        for (k, v) in env {
            if let Some(rest) = k.strip_prefix("REGISTRY_") {
                let key = rest.to_ascii_lowercase().replace('_', ".");
                cfg.set(&key, &Yaml::String(v.clone()), true)?;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn apply_yaml(&mut self, text: &str) -> Result<(), ConfigError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| ConfigError::Syntax {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        match docs.first() {
            None | Some(Yaml::Null) => Ok(()),
            Some(Yaml::Hash(_)) => self.walk("", &docs[0]),
            Some(_) => {
                Err(ConfigError::Value { key: String::from("(top level)"), message: String::from("must be a mapping") })
            }
        }
    }

    fn walk(&mut self, prefix: &str, node: &Yaml) -> Result<(), ConfigError> {
        let Yaml::Hash(map) = node else { return self.set(prefix, node, false) };
        if prefix == "http.headers" {
            return self.set(prefix, node, false);
        }
        for (k, v) in map {
            let name = match k {
                Yaml::String(s) => s.to_ascii_lowercase(),
                Yaml::Integer(i) => i.to_string(),
                _ => continue,
            };
            let key = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            if IGNORED.iter().any(|i| key == *i || key.starts_with(&format!("{i}."))) {
                self.warnings.push(format!("config key {key} is not used by pier; ignored"));
                continue;
            }
            self.walk(&key, v)?;
        }
        Ok(())
    }

    /// Cross-key checks, after every source has been applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let missing = |key: &str, why: &str| Err(ConfigError::Value { key: key.to_string(), message: why.to_string() });
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

    fn htpasswd_mut(&mut self) -> &mut HtpasswdConfig {
        self.htpasswd.get_or_insert_with(|| HtpasswdConfig { realm: String::from("pier"), path: PathBuf::new() })
    }

    fn set(&mut self, key: &str, v: &Yaml, from_env: bool) -> Result<(), ConfigError> {
        let bad = |m: &str| ConfigError::Value { key: key.to_string(), message: m.to_string() };
        match key {
            "version" => {}
            "storage.filesystem.rootdirectory" => {
                self.root = PathBuf::from(string(v).ok_or_else(|| bad("expected a path"))?)
            }
            "storage.delete.enabled" => {
                self.delete_enabled = boolean(v).ok_or_else(|| bad("expected true or false"))?
            }
            "storage.digests.blake3" => self.blake3 = boolean(v).ok_or_else(|| bad("expected true or false"))?,
            "storage.maintenance.uploadpurging.enabled" => {
                if boolean(v).ok_or_else(|| bad("expected true or false"))? {
                    self.upload_purging.get_or_insert(
                        Config::default()
                            .upload_purging
                            .unwrap_or(UploadPurging { age: Duration::ZERO, interval: Duration::ZERO }),
                    );
                } else {
                    self.upload_purging = None;
                }
            }
            "storage.maintenance.uploadpurging.age" => {
                let age = duration(v).ok_or_else(|| bad("expected a duration such as 168h"))?;
                if let Some(p) = self.upload_purging.as_mut() {
                    p.age = age;
                }
            }
            "storage.maintenance.uploadpurging.interval" => {
                let interval = duration(v).ok_or_else(|| bad("expected a duration such as 24h"))?;
                if interval.is_zero() {
                    return Err(bad("must be longer than zero"));
                }
                if let Some(p) = self.upload_purging.as_mut() {
                    p.interval = interval;
                }
            }
            "auth" => match string(v).as_deref() {
                Some("htpasswd") => {
                    self.htpasswd_mut();
                }
                _ => return Err(bad("only htpasswd authentication is supported")),
            },
            "auth.htpasswd.realm" => self.htpasswd_mut().realm = string(v).ok_or_else(|| bad("expected a string"))?,
            "auth.htpasswd.path" => {
                self.htpasswd_mut().path = PathBuf::from(string(v).ok_or_else(|| bad("expected a path"))?)
            }
            k if k.starts_with("auth.") => {
                return Err(bad(
                    "only auth.htpasswd (realm, path) is supported; token and silly authentication are not",
                ))
            }
            "access" => {
                let Yaml::Array(list) = v else { return Err(bad("expected a list of {user, repos, actions} rules")) };
                let mut rules = Vec::new();
                for (i, rule) in list.iter().enumerate() {
                    let field = |name: &str| match rule {
                        Yaml::Hash(h) => h.get(&Yaml::String(name.to_string())),
                        _ => None,
                    };
                    let list_of = |name: &str| -> Result<Vec<String>, ConfigError> {
                        match field(name) {
                            Some(Yaml::Array(items)) => items
                                .iter()
                                .map(|item| {
                                    string(item).ok_or_else(|| bad(&format!("rule {i}: {name} must be strings")))
                                })
                                .collect(),
                            Some(other) => string(other)
                                .map(|s| vec![s])
                                .ok_or_else(|| bad(&format!("rule {i}: {name} must be a list"))),
                            None => Err(bad(&format!("rule {i} has no {name}"))),
                        }
                    };
                    let user = field("user").and_then(string).ok_or_else(|| bad(&format!("rule {i} has no user")))?;
                    let repos = list_of("repos")?;
                    let actions = list_of("actions")?
                        .iter()
                        .map(|a| {
                            Action::parse(a)
                                .ok_or_else(|| bad(&format!("rule {i}: unknown action {a:?} (pull, push, delete)")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    rules.push(AccessRule { user, repos, actions });
                }
                self.access = Some(rules);
            }
            "http.tls.certificate" => {
                self.tls.get_or_insert_with(TlsConfig::default).certificate =
                    PathBuf::from(string(v).ok_or_else(|| bad("expected a path"))?)
            }
            "http.tls.key" => {
                self.tls.get_or_insert_with(TlsConfig::default).key =
                    PathBuf::from(string(v).ok_or_else(|| bad("expected a path"))?)
            }
            "http.tls.clientcas" => {
                let cas = match v {
                    Yaml::Array(items) => items.iter().filter_map(string).map(PathBuf::from).collect(),
                    other => {
                        string(other).map(|s| vec![PathBuf::from(s)]).ok_or_else(|| bad("expected a list of paths"))?
                    }
                };
                self.tls.get_or_insert_with(TlsConfig::default).client_cas = cas;
            }
            "storage.maintenance.readonly.enabled" => {
                self.read_only = boolean(v).ok_or_else(|| bad("expected true or false"))?
            }
            "http.addr" => self.addr = string(v).ok_or_else(|| bad("expected host:port"))?,
            "http.prefix" => {
                let p = string(v).unwrap_or_default();
                let p = p.trim_end_matches('/');
                self.prefix = if p.is_empty() {
                    String::new()
                } else if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("/{p}")
                };
            }
            "http.host" => self.host = string(v).map(|h| h.trim_end_matches('/').to_string()).filter(|h| !h.is_empty()),
            "http.relativeurls" => self.relative_urls = boolean(v).ok_or_else(|| bad("expected true or false"))?,
            "http.idletimeout" => {
                self.idle_timeout = duration(v).ok_or_else(|| bad("expected a duration such as 300s or 5m"))?
            }
            "log.formatter" => {
                self.log_format = match string(v).unwrap_or_default().as_str() {
                    "text" => crate::logging::Format::Text,
                    "json" => crate::logging::Format::Json,
                    "logstash" => return Err(bad("logstash is not supported; use text or json")),
                    _ => return Err(bad("expected text or json")),
                }
            }
            "http.draintimeout" => {
                self.drain_timeout = duration(v).ok_or_else(|| bad("expected a duration such as 30s"))?
            }
            "log.accesslog.disabled" => self.access_log = !boolean(v).ok_or_else(|| bad("expected true or false"))?,
            "log.level" => {
                self.log_level = match string(v).unwrap_or_default().to_ascii_lowercase().as_str() {
                    "error" | "fatal" | "panic" => log::LevelFilter::Error,
                    "warn" | "warning" => log::LevelFilter::Warn,
                    "info" => log::LevelFilter::Info,
                    "debug" => log::LevelFilter::Debug,
                    "trace" => log::LevelFilter::Trace,
                    _ => return Err(bad("expected error, warn, info, debug or trace")),
                }
            }
            "http.headers" => {
                let Yaml::Hash(map) = v else {
                    return Err(bad("expected a mapping of header names to lists of values"));
                };
                for (name, values) in map {
                    let Some(name) = string(name) else { continue };
                    match values {
                        Yaml::Array(list) => {
                            for value in list.iter().filter_map(string) {
                                self.headers.push((name.clone(), value));
                            }
                        }
                        other => {
                            if let Some(value) = string(other) {
                                self.headers.push((name.clone(), value));
                            }
                        }
                    }
                }
            }
            _ => {
                let source = if from_env { "environment variable REGISTRY_" } else { "config key " };
                let shown = if from_env { key.to_ascii_uppercase().replace('.', "_") } else { key.to_string() };
                self.warnings.push(format!("unknown {source}{shown}; ignored"));
            }
        }
        Ok(())
    }
}

fn string(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn boolean(v: &Yaml) -> Option<bool> {
    match v {
        Yaml::Boolean(b) => Some(*b),
        Yaml::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn duration(v: &Yaml) -> Option<Duration> {
    let s = string(v)?;
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0 && n.is_finite()).then(|| Duration::from_secs_f64(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_config() {
        let yaml = "version: 0.1\nlog:\n  level: debug\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5001\n  prefix: /registry/\n  headers:\n    X-Content-Type-Options: [nosniff]\n  bogus: 1\n";
        let mut c = Config::default();
        c.apply_yaml(yaml).unwrap();
        assert_eq!(c.root, PathBuf::from("/var/lib/registry"));
        assert!(c.delete_enabled);
        assert_eq!(c.addr, ":5001");
        assert_eq!(c.prefix, "/registry");
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.headers, vec![("X-Content-Type-Options".to_string(), "nosniff".to_string())]);
        assert!(c.warnings.iter().any(|w| w.contains("http.bogus")), "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("storage.cache")), "{:?}", c.warnings);
    }

    #[test]
    fn env_overrides_and_errors() {
        let env = vec![
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_string(), "/srv/x".to_string()),
            ("REGISTRY_HTTP_ADDR".to_string(), "127.0.0.1:9".to_string()),
            ("REGISTRY_STORAGE_DELETE_ENABLED".to_string(), "true".to_string()),
            ("REGISTRY_NOPE".to_string(), "1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.root, PathBuf::from("/srv/x"));
        assert_eq!(c.addr, "127.0.0.1:9");
        assert!(c.delete_enabled);
        assert!(c.warnings.iter().any(|w| w.contains("REGISTRY_NOPE")), "{:?}", c.warnings);

        let mut c = Config::default();
        match c.apply_yaml("http:\n  addr: [unclosed\n") {
            Err(ConfigError::Syntax { line, .. }) => assert!(line >= 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.apply_yaml("storage:\n  delete:\n    enabled: perhaps\n"), Err(ConfigError::Value { .. })));
        assert_eq!(duration(&Yaml::String("5m".into())), Some(Duration::from_secs(300)));

        let mut c = Config::default();
        c.apply_yaml("storage:\n  maintenance:\n    uploadpurging:\n      age: 2h\n      interval: 10m\n").unwrap();
        assert_eq!(
            c.upload_purging,
            Some(UploadPurging { age: Duration::from_secs(7200), interval: Duration::from_secs(600) })
        );
        c.apply_yaml("storage:\n  maintenance:\n    uploadpurging:\n      enabled: false\n").unwrap();
        assert_eq!(c.upload_purging, None);
    }
}
