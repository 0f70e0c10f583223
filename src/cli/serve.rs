//! `pier serve`: load the config, open the store, listen, serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, UploadPurging};
use crate::http::{server, State};
use crate::store::Store;

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
        let state = Arc::new(State::new(store, config));
        match server::serve(state, listener, stop_signal(), DRAIN).await {
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
