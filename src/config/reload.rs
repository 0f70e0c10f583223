//! What a reload (SIGHUP) may change while pier runs, decided field by field.
//!
//! [`Reload::plan`] destructures the whole [`Config`] without `..`: a field added to `Config`
//! does not compile until it is classified here, either live (copied into [`LiveSettings`],
//! which is all a reload applies) or restart-only (named by its key when it changed).
//!
//! Authentication and authorization change together or not at all: while a change of
//! `auth.htpasswd` waits for a restart, so does a change of `access`; and a reload never removes
//! the `access` rules while authentication stays (that would let every authenticated user push
//! and delete everywhere): such a change is refused and the running rules stay.

use super::Config;
use crate::core::access::AccessRule;

/// The settings a reload applies at once.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveSettings {
    /// `access`
    pub access: Option<Vec<AccessRule>>,
    /// `http.headers`
    pub headers: Vec<(String, String)>,
    /// `storage.maintenance.readonly.enabled`
    pub read_only: bool,
    /// `log.accesslog.disabled` (inverted)
    pub access_log: bool,
    /// `log.level`
    pub log_level: log::LevelFilter,
    /// `storage.delete.enabled`
    pub delete_enabled: bool,
    /// `storage.filesystem.reserve`
    pub free_space_reserve: u64,
    /// `validation.manifests.urls`
    pub manifest_urls: super::ManifestUrls,
    /// `quotas`
    pub quotas: Vec<crate::core::quota::QuotaRule>,
    /// `retention`
    pub retention: Vec<crate::core::retention::RetentionPolicy>,
}

/// A re-read configuration compared with the running one.
#[derive(Debug, PartialEq)]
pub struct Reload {
    /// What to apply now.
    pub live: LiveSettings,
    /// Keys whose new values wait for a restart, in a fixed order.
    pub restart_needed: Vec<&'static str>,
    /// Changes refused outright (they would weaken access), with the reason.
    pub refused: Vec<&'static str>,
}

impl Reload {
    /// Classifies every field of `new` against `running` (the configuration pier started with);
    /// `applied_access` are the access rules in force now (a reload may have changed them).
    pub fn plan(running: &Config, applied_access: &Option<Vec<AccessRule>>, new: &Config) -> Reload {
        let Config {
            root,
            migrate,
            free_space_reserve,
            delete_enabled,
            addr,
            prefix,
            host,
            relative_urls,
            headers,
            log_level,
            access_log,
            log_format,
            drain_timeout,
            idle_timeout,
            blake3,
            upload_purging,
            gc_schedule,
            scrub_schedule,
            quotas,
            retention,
            htpasswd,
            access,
            tls,
            read_only,
            limits,
            manifest_urls,
        } = new;
        let mut restart_needed = Vec::new();
        let mut restart_only = |key: &'static str, changed: bool| {
            if changed {
                restart_needed.push(key);
            }
        };
        // The listener, the store and the TLS acceptor are built once at start.
        restart_only("http.addr", *addr != running.addr);
        restart_only("storage.filesystem.rootdirectory", *root != running.root);
        restart_only("storage.filesystem.migrate", *migrate != running.migrate);
        restart_only("http.tls", *tls != running.tls);
        // Every handler and URL is built on these.
        restart_only("http.prefix", *prefix != running.prefix);
        restart_only("http.host", *host != running.host);
        restart_only("http.relativeurls", *relative_urls != running.relative_urls);
        restart_only("storage.digests.blake3", *blake3 != running.blake3);
        // The authenticator (users file and realm) exists or not from start; the file itself
        // is re-read on change.
        restart_only("auth.htpasswd", *htpasswd != running.htpasswd);
        // Connection handling, the stop sequence, the logger and the purge task are set up once.
        restart_only("http.idletimeout", *idle_timeout != running.idle_timeout);
        restart_only("http.draintimeout", *drain_timeout != running.drain_timeout);
        restart_only("log.formatter", *log_format != running.log_format);
        restart_only("storage.maintenance.uploadpurging", *upload_purging != running.upload_purging);
        restart_only("storage.maintenance.gc", *gc_schedule != running.gc_schedule);
        restart_only("storage.maintenance.scrub", *scrub_schedule != running.scrub_schedule);
        // Connections and transfers in flight were admitted under the old bounds.
        restart_only("limits", *limits != running.limits);
        let mut refused = Vec::new();
        let access = if access == applied_access {
            access.clone()
        } else if *htpasswd != running.htpasswd {
            restart_needed.push("access (changes together with auth.htpasswd)");
            applied_access.clone()
        } else if access.is_none() {
            refused.push(
                "removing the access rules while authentication stays would let every authenticated user push and delete everywhere; the running rules stay (restart to remove them)",
            );
            applied_access.clone()
        } else {
            access.clone()
        };
        Reload {
            live: LiveSettings {
                access,
                headers: headers.clone(),
                read_only: *read_only,
                access_log: *access_log,
                log_level: *log_level,
                delete_enabled: *delete_enabled,
                free_space_reserve: *free_space_reserve,
                manifest_urls: manifest_urls.clone(),
                quotas: quotas.clone(),
                retention: retention.clone(),
            },
            restart_needed,
            refused,
        }
    }
}

impl Config {
    /// The live part of this configuration (what a reload would apply).
    pub fn live_settings(&self) -> LiveSettings {
        Reload::plan(self, &self.access, self).live
    }
}
