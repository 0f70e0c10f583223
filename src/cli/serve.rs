//! `pier serve`: load the config, open the store, listen (or take systemd's sockets), serve
//! until SIGTERM/SIGINT, keeping systemd informed all along.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Loaded, UploadPurging};
use crate::http::auth::Authenticator;
use crate::http::tls::{self, CertReloader};
use crate::http::{server, State};
use crate::store::Store;
use crate::systemd::{self, Notifier};

/// How long after start the consistency walk waits before it begins (see `store::recovery`).
const WALK_DELAY: Duration = Duration::from_secs(1);
/// How often the htpasswd file and TLS certificates are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// Blocking threads do metadata transactions and single file reads and writes, each short: no
/// transfer holds one while its client takes its time (see `http::body`, `handlers::uploads`).
/// Past this many at once, blocking work queues; the count bounds threads under any burst.
const MAX_BLOCKING_THREADS: usize = 64;
/// Exit code after a second stop signal cut the drain short (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: i32 = 130;

pub fn run(args: &[OsString]) -> i32 {
    let config_path = match config_path(args) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("pier serve: {message}");
            return super::EXIT_USAGE;
        }
    };
    let Loaded { config, warnings } = match Config::load(config_path.as_deref(), std::env::vars_os()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("pier: {e}");
            return super::EXIT_USAGE;
        }
    };
    if let Some(note) = crate::logging::init(config.log_level, config.log_format) {
        log::warn!("{note}");
    }
    for w in &warnings {
        log::warn!("{w}");
    }
    // As root with PIER_RUN_AS (pier's image): hand the data directory over and become that user.
    match super::privileges::drop_root(&config.root, std::env::var_os(super::privileges::RUN_AS_ENV).as_deref()) {
        Ok(super::privileges::Outcome::Unchanged) => {}
        Ok(super::privileges::Outcome::Dropped { uid, gid, chowned }) => {
            log::info!("running as {uid}:{gid}; {chowned} entries of {} handed over", config.root.display())
        }
        Err(e) => {
            log::error!("{}", e.with_causes());
            return 1;
        }
    }
    let notifier = Arc::new(Notifier::from_env());
    raise_open_files_limit();
    notifier.status("opening the data directory and recovering from any interruption");
    let store = match Store::open(&config.root) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot open data directory {}: {e}", config.root.display());
            return 1;
        }
    };
    // A registry:2 data directory is imported before serving (cli::migrate, store::migrate).
    if config.migrate && !super::migrate::at_start(&store, &config.root, &notifier) {
        return 1;
    }
    let auth = match &config.htpasswd {
        None => None,
        Some(h) => match Authenticator::load(h) {
            Ok(a) => {
                log::info!(
                    "htpasswd authentication: {} user(s) from {}; unknown names are checked at bcrypt cost {}",
                    a.user_count(),
                    h.path.display(),
                    a.dummy_cost()
                );
                Some(Arc::new(a))
            }
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        },
    };
    let (certs, tls) = match &config.tls {
        None => (None, None),
        Some(t) => {
            let built = CertReloader::load(&t.certificate, &t.key)
                .map(Arc::new)
                .and_then(|certs| Ok((certs.clone(), tls::server_config(t, certs)?)));
            match built {
                Ok((certs, cfg)) => (Some(certs), Some(TlsAcceptor::from(cfg))),
                Err(e) => {
                    log::error!("{e}");
                    return 1;
                }
            }
        }
    };
    let activated = match systemd::activated_listeners() {
        Ok(l) => l,
        Err(e) => {
            log::error!("socket activation: {e}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4))
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(Duration::from_secs(10))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        if activated.http.is_empty() {
            match server::bind(&config.addr).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    log::error!("cannot listen on {}: {e}", config.addr);
                    return 1;
                }
            }
        } else {
            log::info!("socket activation: {} socket(s) from systemd; http.addr is not used", activated.http.len());
            for (l, name) in activated.http {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => {
                        if let Some(name) = name {
                            log::info!("activated socket {name:?}");
                        }
                        listeners.push(l)
                    }
                    Err(e) => {
                        log::error!("socket activation: {e}");
                        return 1;
                    }
                }
            }
        }
        let addrs: Vec<String> = listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect();
        log::info!(
            "data in {}; delete {}",
            config.root.display(),
            if config.delete_enabled { "enabled" } else { "disabled" }
        );
        store.set_quotas(config.quotas.clone());
        store.set_retention_policies(config.retention.clone());
        let store = Arc::new(store);
        // The local admin channel (`pier status`...): a Unix socket in the data directory.
        let admin_path = crate::admin::socket_path(&config.root);
        let admin_socket = match activated.admin {
            Some(l) => {
                log::info!("socket activation: the admin socket from systemd");
                crate::admin::server::adopt(l, &admin_path)
            }
            None => crate::admin::server::bind(&admin_path),
        };
        match admin_socket {
            Ok(socket) => {
                let ctx = crate::admin::server::AdminContext {
                    store: store.clone(),
                    started: std::time::Instant::now(),
                    listening: addrs.clone(),
                };
                tokio::spawn(crate::admin::server::serve(socket, Arc::new(ctx)));
            }
            Err(e) => log::warn!("admin socket {} not available: {e}", admin_path.display()),
        }
        // Logged once the admin socket is bound too: whoever waits for this line (a script, the
        // tests) finds `pier gc` & co. answered by this daemon.
        for a in &addrs {
            log::info!("listening on {a}");
        }
        if tls.is_some() {
            log::info!("serving HTTPS (TLS 1.2/1.3, h2 and http/1.1)");
        }
        if let Some(purging) = config.upload_purging {
            tokio::spawn(purge_uploads(store.clone(), purging));
        }
        if let Some(schedule) = config.gc_schedule {
            tokio::spawn(collect_garbage_every(store.clone(), schedule));
        }
        if let Some(scrub) = config.scrub_schedule {
            if let Err(e) = store.start_background_scrub(scrub.interval, scrub.rate) {
                log::warn!("background scrub not started: {e}");
            }
        }
        // Signal handlers exist before READY=1: a `systemctl stop` or `reload` right after start
        // must find them.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot install signal handlers: {e}");
                return 1;
            }
        };
        // index.json files are written off the request path (store::index); its first pass
        // rewrites what a crash left due.
        if let Err(e) = store.start_index_writer() {
            log::error!("{e}");
            return 1;
        }
        // What a crash left unreferenced is removed while pier serves (store::recovery): the
        // first request never waits for a walk over the whole store.
        if let Err(e) = store.start_consistency_walk(WALK_DELAY) {
            log::warn!("consistency walk not started: {e} (it runs at the next start)");
        }
        let repos = store.repo_count().unwrap_or(0);
        let serving = format!("serving {repos} repositories on {}", addrs.join(", "));
        notifier.ready(&serving);
        let drain = config.drain_timeout;
        let state = Arc::new(State::new(store.clone(), config, auth.clone()));
        tokio::spawn(reload_loop(signals.hup, config_path, auth, certs, notifier.clone(), state.clone()));
        if let Some(every) = systemd::watchdog_interval() {
            let probe_addrs = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
            if let Err(e) = super::watchdog::start(state.clone(), probe_addrs, notifier.clone(), every) {
                log::error!("cannot start the watchdog: {e}");
                return 1;
            }
        }
        let served =
            server::serve(state, listeners, tls, stop_signal(signals.term, signals.int, notifier.clone()), drain).await;
        // Requests are done: write every index.json still due, so a clean stop leaves each
        // layout current (a second stop signal exits before this; the next start catches up).
        // Then close the database: closed here, it opens at once next time; left to the process
        // exit (other threads hold the store) it would be repaired at the next start, which
        // reads all of it.
        let stopped = tokio::task::spawn_blocking(move || (store.stop_index_writer(), store.close())).await;
        match stopped {
            Ok((flushed, closed)) => {
                match flushed {
                    Ok(n) => log::debug!("{n} index.json written at shutdown"),
                    Err(e) => log::error!("index.json not written at shutdown (rewritten at the next start): {e}"),
                }
                if let Err(e) = closed {
                    log::warn!("metadata not closed cleanly (repaired at the next start): {e}");
                }
            }
            Err(e) => log::error!("shutdown of the store failed (the next start recovers): {e}"),
        }
        match served {
            Ok(()) => 0,
            Err(e) => {
                log::error!("server failed: {e}");
                1
            }
        }
    })
}

/// The config file named on the command line: `--config FILE`, `-c FILE`, `--config=FILE` or
/// just `FILE` (any bytes: a path need not be UTF-8). The error is the message for the user.
pub(super) fn config_path(args: &[OsString]) -> Result<Option<PathBuf>, String> {
    let mut path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if arg == "--config" || arg == "-c" {
            match it.next() {
                Some(p) => path = Some(PathBuf::from(p)),
                None => return Err(String::from("--config needs a file")),
            }
        } else if let Some(p) = bytes.strip_prefix(b"--config=") {
            path = Some(PathBuf::from(OsStr::from_bytes(p)));
        } else if !bytes.starts_with(b"-") && path.is_none() {
            path = Some(PathBuf::from(arg));
        } else {
            return Err(format!("unknown argument {arg:?}\n\n{}", super::USAGE));
        }
    }
    Ok(path)
}

/// Raises the soft limit of open files to the hard limit, as Go servers do. Every connection is
/// a descriptor, and a shell's soft limit (often 1024) would lock every client out long before
/// memory runs short, while the hard limit (524288 on systemd hosts) is there for the asking.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    /// Linux's default `fs.nr_open`: the most a process may have, whatever the hard limit says.
    const NR_OPEN: nix::libc::rlim_t = 1 << 20;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let target = if hard == RLIM_INFINITY { NR_OPEN } else { hard };
    if soft >= target {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => log::info!("open files limit raised from {soft} to {target}"),
        Err(e) => log::warn!("open files limit stays at {soft} (hard limit {hard}): {e}"),
    }
}

/// Garbage collection every `interval` (the first one an interval after start: the first
/// moments belong to the first requests), on a blocking thread.
async fn collect_garbage_every(store: Arc<Store>, schedule: crate::config::GcSchedule) {
    let options = crate::store::gc::GcOptions {
        grace_secs: schedule.grace.as_secs(),
        untagged: schedule.untagged,
        dry_run: false,
        full: false,
    };
    loop {
        tokio::time::sleep(schedule.interval).await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.collect_garbage(options, |_| {})).await {
            Ok(Ok(report)) => log::info!("scheduled {}", crate::admin::server::gc_summary(&report)),
            Ok(Err(e)) => log::warn!("scheduled garbage collection failed (tried again at the next interval): {e}"),
            Err(e) => log::warn!("scheduled garbage collection failed (tried again at the next interval): {e}"),
        }
    }
}

/// Purges abandoned uploads at start and then every `interval`.
async fn purge_uploads(store: Arc<Store>, purging: UploadPurging) {
    loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.purge_uploads(purging.age)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => log::info!("purged {n} upload(s) idle for more than {}s", purging.age.as_secs()),
            Ok(Err(e)) => log::warn!("upload purging failed: {e}"),
            Err(e) => log::warn!("upload purging failed: {e}"),
        }
        tokio::time::sleep(purging.interval).await;
    }
}

/// The signals pier reacts to, registered once at start-up.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Re-reads the htpasswd file and the TLS certificate when they change (polled), and on SIGHUP
/// also the configuration file, telling systemd `RELOADING=1` ... `READY=1`.
async fn reload_loop(
    mut hup: Signal,
    config_path: Option<PathBuf>,
    auth: Option<Arc<Authenticator>>,
    certs: Option<Arc<CertReloader>>,
    notifier: Arc<Notifier>,
    state: Arc<State>,
) {
    loop {
        let forced = tokio::select! {
            () = tokio::time::sleep(RELOAD_POLL) => false,
            Some(()) = hup.recv() => {
                log::info!("SIGHUP: reloading the configuration, htpasswd and TLS certificates");
                notifier.reloading();
                true
            }
        };
        if !forced && auth.is_none() && certs.is_none() {
            continue;
        }
        let (a, c, s, path) = (auth.clone(), certs.clone(), state.clone(), config_path.clone());
        let _ = tokio::task::spawn_blocking(move || {
            if forced {
                reload_config(&s, path.as_deref());
            }
            if let Some(a) = a {
                a.reload(forced);
            }
            if let Some(c) = c {
                c.reload(forced);
            }
        })
        .await;
        if forced {
            let repos = state.store.repo_count().unwrap_or(0);
            notifier.ready(&format!("serving {repos} repositories (reloaded)"));
        }
    }
}

/// Re-reads the configuration (file and `REGISTRY_*` environment) and applies what can change
/// while running; a broken file leaves the running configuration in force.
fn reload_config(state: &State, path: Option<&std::path::Path>) {
    match Config::load(path, std::env::vars_os()) {
        Ok(Loaded { config: new, warnings }) => {
            for w in &warnings {
                log::warn!("{w}");
            }
            let needs_restart = state.reconfigure(&new);
            if needs_restart.is_empty() {
                log::info!("configuration reloaded");
            } else {
                log::warn!(
                    "configuration reloaded; changes to {} take effect after a restart",
                    needs_restart.join(", ")
                );
            }
        }
        Err(e) => log::error!("configuration not reloaded, keeping the running one: {e}"),
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once (safe: every
/// acknowledged write is already durable, and the start-up sweep removes leftovers).
async fn stop_signal(mut term: Signal, mut int: Signal, notifier: Arc<Notifier>) {
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
    notifier.stopping();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        log::warn!("second stop signal: exiting now without waiting for in-flight requests");
        std::process::exit(EXIT_INTERRUPTED);
    });
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn os(args: &[&[u8]]) -> Vec<OsString> {
        args.iter().map(|a| OsString::from_vec(a.to_vec())).collect()
    }

    #[test]
    fn config_path_forms_and_non_utf8_paths() {
        assert_eq!(config_path(&[]), Ok(None));
        for args in [&[&b"--config"[..], b"c.yml"][..], &[b"-c", b"c.yml"], &[b"--config=c.yml"], &[b"c.yml"]] {
            assert_eq!(config_path(&os(args)), Ok(Some(PathBuf::from("c.yml"))), "{args:?}");
        }
        // A file name need not be UTF-8.
        let expected = Some(PathBuf::from(OsString::from_vec(b"caf\xe9.yml".to_vec())));
        assert_eq!(config_path(&os(&[b"--config", b"caf\xe9.yml"])), Ok(expected.clone()));
        assert_eq!(config_path(&os(&[b"--config=caf\xe9.yml"])), Ok(expected.clone()));
        assert_eq!(config_path(&os(&[b"caf\xe9.yml"])), Ok(expected));
        assert_eq!(config_path(&os(&[b"--config"])), Err(String::from("--config needs a file")));
        let e = config_path(&os(&[b"--fr\xffb"])).unwrap_err();
        assert!(e.starts_with("unknown argument \"--fr\\xFFb\""), "{e}");
        assert!(config_path(&os(&[b"a.yml", b"b.yml"])).unwrap_err().starts_with("unknown argument \"b.yml\""));
    }
}
