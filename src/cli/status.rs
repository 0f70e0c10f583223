//! `pier status [--config FILE] [--json]`: what the daemon of the configured data directory
//! serves and what the store holds; read from the store itself when no daemon runs.

use std::ffi::OsString;

use super::store_access::{load_config, on_daemon_or_store, print_json, take_switches};
use crate::admin::protocol::Request;
use crate::admin::status;

pub fn run(args: &[OsString]) -> i32 {
    let ([json], rest) = take_switches(args, ["--json"]);
    let config = match load_config("status", &rest) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = on_daemon_or_store(
        &config.root,
        &Request::Status {},
        |_| {},
        |store| status::status(store, None).map_err(|e| e.to_string()),
    );
    match answer {
        Ok(status) if json => print_json("status", &status),
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
