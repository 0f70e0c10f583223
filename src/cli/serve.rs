//! `pier serve`: load the config, open the store, listen, serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, UploadPurging};
use crate::http::auth::Authenticator;
use crate::http::tls::{self, CertReloader};
use crate::http::{server, State};
use crate::store::Store;
use tokio_rustls::TlsAcceptor;

/// How often the htpasswd file and TLS certificates are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// How long in-flight requests may run after a stop signal.
const DRAIN: Duration = Duration::from_secs(30);
/// Each streaming upload or download holds one blocking thread for its duration.
const MAX_BLOCKING_THREADS: usize = 512;

pub fn run(args: &[String]) -> i32 {
    let mut config_path: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => match it.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => {
                    eprintln!("pier serve: --config needs a file");
                    return super::EXIT_USAGE;
                }
            },
            s if s.starts_with("--config=") => config_path = Some(PathBuf::from(&s["--config=".len()..])),
            s if !s.starts_with('-') && config_path.is_none() => config_path = Some(PathBuf::from(s)),
            other => {
                eprintln!("pier serve: unknown argument {other:?}\n\n{}", super::USAGE);
                return super::EXIT_USAGE;
            }
        }
    }
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pier: {e}");
            return super::EXIT_USAGE;
        }
    };
    crate::logging::init(config.log_level);
    for w in &config.warnings {
        log::warn!("{w}");
    }
    let mut store = match Store::open(&config.root) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot open data directory {}: {e}", config.root.display());
            return 1;
        }
    };
    let auth = match &config.htpasswd {
        None => None,
        Some(h) => match Authenticator::load(h) {
            Ok(a) => {
                log::info!("htpasswd authentication: {} user(s) from {}", a.user_count(), h.path.display());
                Some(Arc::new(a))
            }
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        },
    };
    let certs = match &config.tls {
        None => None,
        Some(t) => match CertReloader::load(&t.certificate, &t.key) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        },
    };
    let tls = match (&config.tls, &certs) {
        (Some(t), Some(c)) => match tls::server_config(t, c.clone()) {
            Ok(cfg) => Some(TlsAcceptor::from(cfg)),
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        },
        _ => None,
    };
    store.delete_enabled = config.delete_enabled;
    store.blake3 = config.blake3;
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
        let listener = match server::bind(&config.addr).await {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot listen on {}: {e}", config.addr);
                return 1;
            }
        };
        let shown = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| config.addr.clone());
        tokio::spawn(reload_loop(auth.clone(), certs.clone()));
        log::info!(
            "data in {}; delete {}",
            config.root.display(),
            if config.delete_enabled { "enabled" } else { "disabled" }
        );
        log::info!("listening on {shown}");
        let store = Arc::new(store);
        if let Some(purging) = config.upload_purging {
            tokio::spawn(purge_uploads(store.clone(), purging));
        }
        let state = Arc::new(State::new(store, config, auth));
        if tls.is_some() {
            log::info!("serving HTTPS (TLS 1.2/1.3, h2 and http/1.1)");
        }
        match server::serve(state, listener, tls, stop_signal(), DRAIN).await {
            Ok(()) => 0,
            Err(e) => {
                log::error!("server failed: {e}");
                1
            }
        }
    })
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

/// Re-reads the htpasswd file and the TLS certificate when they change (polled) and on SIGHUP.
async fn reload_loop(auth: Option<Arc<Authenticator>>, certs: Option<Arc<CertReloader>>) {
    use tokio::signal::unix::{signal, SignalKind};
    if auth.is_none() && certs.is_none() {
        return;
    }
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            () = tokio::time::sleep(RELOAD_POLL) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                log::info!("SIGHUP: reloading htpasswd and TLS certificates");
                true
            }
        };
        let (a, c) = (auth.clone(), certs.clone());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(a) = a {
                a.reload(forced);
            }
            if let Some(c) = c {
                c.reload(forced);
            }
        })
        .await;
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
}
