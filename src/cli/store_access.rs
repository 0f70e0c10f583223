//! How the maintenance commands (`status`, `gc`) reach the store: through the running daemon's
//! admin channel, or, when no daemon runs, by opening the store themselves. Either way they get
//! the same result type, so their output does not depend on the path.

use std::ffi::OsString;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::admin::client::{self, ClientError};
use crate::admin::protocol::Request;
use crate::config::{Config, Loaded};
use crate::store::Store;

/// Takes the switches `names` (e.g. `--json`) out of `args`: which were given, in the order of
/// `names`, and the arguments left (for [`load_config`]).
pub(super) fn take_switches<const N: usize>(args: &[OsString], names: [&str; N]) -> ([bool; N], Vec<OsString>) {
    let given = names.map(|n| args.iter().any(|a| a == n));
    let rest = args.iter().filter(|a| !names.iter().any(|n| *a == n)).cloned().collect();
    (given, rest)
}

/// The configuration `pier serve` would use: `--config FILE` (or a bare `FILE`) among `args`,
/// and the `REGISTRY_*` environment. `Err` is the exit code (the message is printed).
pub(super) fn load_config(command: &str, args: &[OsString]) -> Result<Config, i32> {
    let path = super::serve::config_path(args).map_err(|message| {
        eprintln!("pier {command}: {message}");
        super::EXIT_USAGE
    })?;
    let Loaded { config, .. } = Config::load(path.as_deref(), std::env::vars_os()).map_err(|e| {
        eprintln!("pier: {e}");
        super::EXIT_USAGE
    })?;
    Ok(config)
}

/// Sends `request` to the daemon of the data directory `root`; when none runs, runs `direct`
/// on the store opened here (and closed cleanly after). `progress` hears the daemon's progress.
pub(super) fn on_daemon_or_store<T: DeserializeOwned>(
    root: &Path,
    request: &Request,
    progress: impl FnMut(&str),
    direct: impl FnOnce(&Store) -> Result<T, String>,
) -> Result<T, String> {
    match client::request(&crate::admin::socket_path(root), request, progress) {
        Ok(result) => serde_json::from_value(result).map_err(|e| format!("unexpected answer from the daemon: {e}")),
        Err(ClientError::NoDaemon { .. }) => with_store_directly(root, Missing::Refuse, direct),
        Err(e) => Err(e.to_string()),
    }
}

/// Prints `value` as pretty JSON (`--json`); the exit code.
pub(super) fn print_json(command: &str, value: &impl serde::Serialize) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("pier {command}: {e}");
            1
        }
    }
}

/// What [`with_store_directly`] does when `root` holds no store yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    /// Refuse: the command reads or maintains a store (status, gc, export...).
    Refuse,
    /// Create it: the command fills one (import into a new site's empty directory).
    Create,
}

/// Runs `f` on the store of `root` opened by the command itself (no daemon answered on the
/// admin socket), and closes it cleanly after (the next start needs no repair).
pub(super) fn with_store_directly<T>(
    root: &Path,
    missing: Missing,
    f: impl FnOnce(&Store) -> Result<T, String>,
) -> Result<T, String> {
    if missing == Missing::Refuse && !root.join("meta.redb").exists() {
        return Err(format!("{} holds no pier store", root.display()));
    }
    let store = Store::open(root).map_err(|e| {
        format!("cannot open the store in {} (a daemon that does not answer on its admin socket?): {e}", root.display())
    })?;
    let result = f(&store);
    if let Err(e) = store.close() {
        eprintln!("pier: closing the store: {e}");
    }
    result
}
