//! `pier gc [--config FILE] [--dry-run] [--grace DURATION] [--untagged] [--full] [--json]`: garbage
//! collection (`store::gc`) by the running daemon while it serves, or on the store itself when
//! no daemon runs.

use std::ffi::OsString;
use std::io::IsTerminal;

use super::store_access::{load_config, on_daemon_or_store, print_json};
use crate::admin::protocol::Request;
use crate::admin::server::gc_summary;
use crate::store::gc::GcOptions;

pub const USAGE: &str = "\
usage: pier gc [--config FILE] [--dry-run] [--grace DURATION] [--untagged] [--full] [--json]

Removes from each repository the blobs no manifest of it references (and, with --untagged, the
untagged manifests nothing tagged needs: not children of a tagged index, not referrers of a kept
subject); a blob's file goes when no repository links it any more. Runs in the daemon while it
serves, or on the store when no daemon runs.
  --dry-run          report what would go, change nothing
  --grace DURATION   keep blob links younger than this (default 1h; a push in progress uploads
                     its blobs before its manifest): e.g. 0s, 30m, 2h
  --untagged         also remove untagged manifests
  --full             visit every repository (by default only those changed since the last
                     collection: its cost follows the change, not the store's size)
  --json             the report as JSON
";

pub fn run(args: &[OsString]) -> i32 {
    let mut options =
        GcOptions { grace_secs: GcOptions::DEFAULT_GRACE.as_secs(), untagged: false, dry_run: false, full: false };
    let mut json = false;
    let mut config_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--dry-run") => options.dry_run = true,
            Some("--untagged") => options.untagged = true,
            Some("--full") => options.full = true,
            Some("--json") => json = true,
            Some("--grace") => {
                let Some(grace) = it.next().and_then(|g| g.to_str()).and_then(|g| humantime::parse_duration(g).ok())
                else {
                    eprintln!("pier gc: --grace needs a duration such as 0s, 30m or 2h\n\n{USAGE}");
                    return super::EXIT_USAGE;
                };
                options.grace_secs = grace.as_secs();
            }
            Some("-h" | "--help" | "help") => {
                print!("{USAGE}");
                return 0;
            }
            _ => config_args.push(arg.clone()),
        }
    }
    let config = match load_config("gc", &config_args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let terminal = std::io::stderr().is_terminal() && !json;
    let request = Request::Gc {
        grace_secs: options.grace_secs,
        untagged: options.untagged,
        dry_run: options.dry_run,
        full: options.full,
    };
    let report = on_daemon_or_store(
        &config.root,
        &request,
        |message| {
            if terminal {
                eprintln!("pier gc: {message}");
            }
        },
        |store| {
            store
                .collect_garbage(options, |message| {
                    if terminal {
                        eprintln!("pier gc: {message}");
                    }
                })
                .map_err(|e| e.to_string())
        },
    );
    match report {
        Ok(report) if json => print_json("gc", &report),
        Ok(report) => {
            println!("{}", gc_summary(&report));
            0
        }
        Err(message) => {
            eprintln!("pier gc: {message}");
            1
        }
    }
}
