//! `pier fsck [--config FILE] [--repair] [--json]`: checks the data derived from the metadata
//! (blob files and hardlinks, `index.json`, derived tables) and, with `--repair`, rebuilds it
//! (`store::fsck`), in the running daemon or on the store itself when none runs. Exit status 0
//! when the store is consistent (after the repair, with `--repair`), 1 when it is not, 3 when
//! the check could not run.

use std::ffi::OsString;
use std::io::IsTerminal;

use super::store_access::{load_config, on_daemon_or_store, print_json, take_switches};
use crate::admin::protocol::Request;
use crate::store::fsck::FsckReport;

pub fn run(args: &[OsString]) -> i32 {
    let ([json, repair], rest) = take_switches(args, ["--json", "--repair"]);
    let config = match load_config("fsck", &rest) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let terminal = std::io::stderr().is_terminal() && !json;
    let say = |message: &str| {
        if terminal {
            eprintln!("pier fsck: {message}");
        }
    };
    let report = on_daemon_or_store(&config.root, &Request::Fsck { repair }, say, |store| {
        store.fsck(repair, say).map_err(|e| e.to_string())
    });
    let report: FsckReport = match report {
        Ok(r) => r,
        Err(message) => {
            eprintln!("pier fsck: {message}");
            return 3;
        }
    };
    let code = if report.is_clean() { 0 } else { 1 };
    if json {
        let printed = print_json("fsck", &report);
        return if printed == 0 { code } else { printed };
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    for done in &report.repaired {
        println!("repaired: {done}");
    }
    for lost in &report.lost {
        println!("lost: {lost}");
    }
    for left in &report.unrepairable {
        println!("unrepairable: {left}");
    }
    let verdict = match (report.problems.is_empty(), report.repair, report.is_clean()) {
        (true, _, true) => "consistent",
        (_, true, true) => "repaired, consistent now",
        (_, true, false) => "NOT consistent after the repair (see lost and unrepairable)",
        (_, false, _) => "NOT consistent: run `pier fsck --repair`",
    };
    println!(
        "fsck: {} problem(s), {} unreferenced file(s) in {} ms: {verdict}",
        report.problems.len(),
        report.garbage,
        report.elapsed_ms
    );
    code
}
