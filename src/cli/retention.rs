//! `pier retention [--config FILE] [--dry-run] [--json]`: drops the tags the `retention:`
//! policies of the configuration name (in the running daemon, with its configuration, or on the
//! store itself when none runs); `pier gc` then frees what only those tags kept.

use std::ffi::OsString;

use super::store_access::{load_config, on_daemon_or_store, print_json, take_switches};
use crate::admin::protocol::Request;
use crate::store::retention::RetentionReport;

pub fn run(args: &[OsString]) -> i32 {
    let ([json, dry_run], rest) = take_switches(args, ["--json", "--dry-run"]);
    let config = match load_config("retention", &rest) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.retention.is_empty() {
        eprintln!("pier retention: the configuration has no retention policies (retention: in config.yml)");
        return 1;
    }
    let policies = config.retention.clone();
    let report = on_daemon_or_store(
        &config.root,
        &Request::Retention { dry_run },
        |_| {},
        |store| store.apply_retention(&policies, dry_run).map_err(|e| e.to_string()),
    );
    let report: RetentionReport = match report {
        Ok(r) => r,
        Err(message) => {
            eprintln!("pier retention: {message}");
            return 1;
        }
    };
    if json {
        return print_json("retention", &report);
    }
    let verb = if report.dry_run { "would drop" } else { "dropped" };
    for (repo, tags) in &report.dropped {
        println!("{repo}: {verb} {}", tags.join(", "));
    }
    println!(
        "retention: {} repositories under a policy; {verb} {} tag(s){}",
        report.repositories,
        report.tags_dropped,
        if report.dry_run { "" } else { " (pier gc frees what they alone kept)" }
    );
    0
}
