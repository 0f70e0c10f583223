//! `pier du [--config FILE] [--json] [REPO]`: disk usage per repository and of the store, from
//! the running daemon or the store itself. (Here a bare argument names a repository; the
//! configuration is given with `--config`.)

use std::ffi::OsString;

use super::store_access::{load_config, on_daemon_or_store, print_json};
use crate::admin::du;
use crate::admin::protocol::Request;

pub fn run(args: &[OsString]) -> i32 {
    let mut json = false;
    let mut repository = None;
    let mut config_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--json") => json = true,
            Some("--config" | "-c") => {
                config_args.push(arg.clone());
                config_args.extend(it.next().cloned());
            }
            Some(r) if !r.starts_with('-') && repository.is_none() => repository = Some(r.to_string()),
            _ => config_args.push(arg.clone()),
        }
    }
    let config = match load_config("du", &config_args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let request = Request::Du { repository: repository.clone() };
    let answer = on_daemon_or_store(
        &config.root,
        &request,
        |_| {},
        |store| du::du(store, repository.as_deref()).map_err(|e| e.to_string()),
    );
    match answer {
        Ok(usage) if json => print_json("du", &usage),
        Ok(usage) => {
            println!("{usage}");
            0
        }
        Err(message) => {
            eprintln!("pier du: {message}");
            1
        }
    }
}
