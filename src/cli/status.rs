//! `pier status [--config FILE] [--json]`: asks the daemon of the configured data directory
//! over the admin channel; when none runs, reads the store itself. Same output either way.

use std::ffi::OsString;

use crate::admin::client::{self, ClientError};
use crate::admin::protocol::Request;
use crate::admin::status::{self, Status};
use crate::config::{Config, Loaded};
use crate::store::Store;

pub fn run(args: &[OsString]) -> i32 {
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<OsString> = args.iter().filter(|a| *a != "--json").cloned().collect();
    let config_path = match super::serve::config_path(&rest) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("pier status: {message}");
            return super::EXIT_USAGE;
        }
    };
    let Loaded { config, .. } = match Config::load(config_path.as_deref(), std::env::vars_os()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("pier: {e}");
            return super::EXIT_USAGE;
        }
    };
    let socket = crate::admin::socket_path(&config.root);
    let status = match client::request(&socket, &Request::Status {}, |_| {}) {
        Ok(result) => serde_json::from_value::<Status>(result).map_err(|e| format!("unexpected answer: {e}")),
        Err(ClientError::NoDaemon { .. }) => read_directly(&config.root),
        Err(e) => Err(e.to_string()),
    };
    match status {
        Ok(status) if json => match serde_json::to_string_pretty(&status) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("pier status: {e}");
                1
            }
        },
        Ok(status) => {
            println!("{status}");
            0
        }
        Err(message) => {
            eprintln!("pier status: {message}");
            1
        }
    }
}

/// No daemon answers: open the store (which only one process can hold) and count.
fn read_directly(root: &std::path::Path) -> Result<Status, String> {
    if !root.join("meta.redb").exists() {
        return Err(format!("{} holds no pier store", root.display()));
    }
    let store = Store::open(root).map_err(|e| {
        format!("cannot open the store in {} (a daemon that does not answer on its admin socket?): {e}", root.display())
    })?;
    let status = status::status(&store, None).map_err(|e| e.to_string());
    if let Err(e) = store.close() {
        log::debug!("closing the store: {e}");
    }
    status
}
