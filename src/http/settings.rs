//! What every connection shares ([`State`]) and the part of the configuration that SIGHUP
//! reloads ([`Settings`]).
//!
//! Invariant: a request works on one [`Settings`] snapshot from start to end; a reload swaps in
//! a new snapshot and never changes one in place.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use http::{HeaderName, HeaderValue};

use super::auth::Authenticator;
use super::limits::Bounds;
use super::url_rules::UrlRules;
use crate::config::{Config, LiveSettings, Reload};
use crate::core::access::AccessPolicy;
use crate::core::policy::{AlgorithmSet, RegistryPolicy};
use crate::core::Algorithm;
use crate::store::Store;

/// Shared by every connection.
pub struct State {
    pub store: Arc<Store>,
    /// The configuration pier started with (listen address, data directory, TLS and htpasswd
    /// paths, URLs: what a reload cannot change).
    pub config: Config,
    /// `None` when authentication is off.
    pub auth: Option<Arc<Authenticator>>,
    /// What a reload (SIGHUP) can change; each request works on one snapshot.
    settings: RwLock<Arc<Settings>>,
    /// Connections accepted so far (the watchdog checks that it moves).
    pub accepted: AtomicU64,
    /// Connections and transfers admitted now, against `limits`.
    pub bounds: Bounds,
}

/// The part of the configuration that SIGHUP reloads.
pub struct Settings {
    /// Who may do what (access rules).
    pub access: AccessPolicy,
    /// What the registry does at all: deletion, read-only mode, digest algorithms.
    pub policy: RegistryPolicy,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub access_log: bool,
    /// Which URLs the layers of a pushed manifest may name.
    pub manifest_urls: UrlRules,
}

/// The digest algorithms `config` accepts.
fn accepted_algorithms(config: &Config) -> AlgorithmSet {
    let mut algorithms = RegistryPolicy::DEFAULT_ALGORITHMS;
    if config.blake3 {
        algorithms.insert(Algorithm::Blake3);
    }
    algorithms
}

impl Settings {
    /// The `live` settings on a registry that accepts `algorithms` (which needs a restart to
    /// change: `storage.digests.blake3`).
    fn new(live: &LiveSettings, algorithms: AlgorithmSet, authenticated: bool) -> Settings {
        let extra_headers = live
            .headers
            .iter()
            .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?)))
            .collect();
        let access = match (authenticated, &live.access) {
            (false, _) => AccessPolicy::Open,
            (true, None) => AccessPolicy::AuthenticatedOnly,
            (true, Some(rules)) => AccessPolicy::Rules(rules.clone()),
        };
        let policy = RegistryPolicy { delete: live.delete_enabled, read_only: live.read_only, algorithms };
        Settings {
            access,
            policy,
            extra_headers,
            access_log: live.access_log,
            manifest_urls: UrlRules::new(&live.manifest_urls),
        }
    }
}

impl State {
    pub fn new(store: Arc<Store>, config: Config, auth: Option<Arc<Authenticator>>) -> State {
        let live = config.live_settings();
        store.set_free_space_reserve(live.free_space_reserve);
        let settings = RwLock::new(Arc::new(Settings::new(&live, accepted_algorithms(&config), auth.is_some())));
        let bounds = Bounds::new(config.limits);
        State { store, config, auth, settings, accepted: AtomicU64::new(0), bounds }
    }

    /// The current reloadable settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Applies a re-read configuration: its live settings (see [`Reload::plan`]) take effect
    /// now; the keys of anything else that changed are returned, since they need a restart.
    pub fn reconfigure(&self, new: &Config) -> Vec<String> {
        let applied_access = self.settings().access.rules().map(<[_]>::to_vec);
        let Reload { live, restart_needed, refused } = Reload::plan(&self.config, &applied_access, new);
        for why in refused {
            log::error!("configuration reload: {why}");
        }
        let mut restart: Vec<String> = restart_needed.into_iter().map(String::from).collect();
        if live.access.is_some() && self.auth.is_none() {
            restart.push(String::from("access (needs auth.htpasswd, which needs a restart)"));
        }
        log::set_max_level(live.log_level);
        self.store.set_free_space_reserve(live.free_space_reserve);
        self.store.set_quotas(live.quotas.clone());
        self.store.set_retention_policies(live.retention.clone());
        let settings = Settings::new(&live, accepted_algorithms(&self.config), self.auth.is_some());
        if let Ok(mut s) = self.settings.write() {
            *s = Arc::new(settings);
        }
        restart
    }
}
