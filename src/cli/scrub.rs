//! `pier scrub [--config FILE] [--json]`: re-hashes every blob (in the running daemon, or on the
//! store itself when none runs); a corrupt one is quarantined and reported. Exit status 1 when
//! this run found corruption (3 when it could not run), 0 otherwise.

use std::ffi::OsString;
use std::io::IsTerminal;

use super::store_access::{load_config, on_daemon_or_store, print_json, take_switches};
use crate::admin::human_bytes;
use crate::admin::protocol::Request;
use crate::store::scrub::ScrubReport;

pub fn run(args: &[OsString]) -> i32 {
    let ([json], rest) = take_switches(args, ["--json"]);
    let config = match load_config("scrub", &rest) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let terminal = std::io::stderr().is_terminal() && !json;
    let say = |message: &str| {
        if terminal {
            eprintln!("pier scrub: {message}");
        }
    };
    let report =
        on_daemon_or_store(&config.root, &Request::Scrub {}, say, |store| store.scrub(say).map_err(|e| e.to_string()));
    let report: ScrubReport = match report {
        Ok(r) => r,
        Err(message) => {
            eprintln!("pier scrub: {message}");
            return 3;
        }
    };
    let code = if report.corrupt.is_empty() { 0 } else { 1 };
    if json {
        let printed = print_json("scrub", &report);
        return if printed == 0 { code } else { printed };
    }
    println!(
        "scrub: {} blobs ({}) checked in {} ms; {} corrupt; {} still quarantined from earlier scrubs",
        report.blobs,
        human_bytes(report.bytes),
        report.elapsed_ms,
        report.corrupt.len(),
        report.still_quarantined
    );
    for c in &report.corrupt {
        println!("corrupt: {} ({}): quarantined; push the same content again to heal it", c.digest, c.why);
    }
    code
}
