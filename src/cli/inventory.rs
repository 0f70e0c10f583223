//! `pier inventory -o FILE|- [--json] [--config FILE]`: what this site holds (every blob's
//! digest, sorted), for `pier export --exclude-inventory` at the connected side. Written by the
//! running daemon into a pipe passed over `admin.sock`, or from the store opened here when no
//! daemon runs; the file appears under its name only when complete.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::bundle_out::{OutputOptions, Target, Written};
use super::export::{copy_into_output, finish, from_value, pipe};
use super::progress::ProgressDisplay;
use super::store_access::{load_config, with_store_directly, Missing};
use crate::admin::client::{ClientError, Connection};
use crate::admin::human_bytes;
use crate::admin::protocol::Request;
use crate::bundle::inventory::{write_inventory, InventoryReport};

pub const USAGE: &str = "\
usage: pier inventory -o FILE|- [--json] [--config FILE]

Writes what this registry holds (the digest of every blob and manifest, sorted), for
`pier export --exclude-inventory FILE` at the connected side: the bundle made against it
leaves out what is already here.
  -o, --output FILE|-   the inventory (- : stdout)
  --json                the report as JSON on stdout (on stderr with -o -)
";

/// What `pier inventory` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySummary {
    #[serde(flatten)]
    pub inventory: InventoryReport,
    pub output: Written,
}

pub fn run(args: &[OsString]) -> i32 {
    let mut target = None;
    let mut json = false;
    let mut config_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-o" | "--output") => match it.next() {
                Some(v) if v == "-" => target = Some(Target::Stdout),
                Some(v) => target = Some(Target::File(PathBuf::from(v))),
                None => return usage("--output needs a file (or - for stdout)"),
            },
            Some("--json") => json = true,
            Some("-h" | "--help") => {
                print!("{USAGE}");
                return 0;
            }
            _ => config_args.push(arg.clone()),
        }
    }
    let Some(target) = target else { return usage("-o FILE (or -o - for stdout) is required") };
    let config = match load_config("inventory", &config_args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let output = OutputOptions { target: target.clone(), zstd: false, split: None };
    let display = ProgressDisplay::new("inventory", json);
    let result = inventory(&config.root, &output, &display);
    display.finish();
    let summary = match result {
        Ok(s) => s,
        Err(message) => {
            eprintln!("pier inventory: {message}");
            return 1;
        }
    };
    let text = if json {
        serde_json::to_string_pretty(&summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    } else {
        let place = summary.output.files.first().map(|f| format!(" in {}", f.display())).unwrap_or_default();
        format!(
            "inventory: {} blob(s) ({}) listed{place}",
            summary.inventory.blobs,
            human_bytes(summary.inventory.bytes)
        )
    };
    if target == Target::Stdout {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    0
}

fn usage(message: &str) -> i32 {
    eprintln!("pier inventory: {message}\n\n{USAGE}");
    super::EXIT_USAGE
}

fn inventory(
    root: &std::path::Path,
    output: &OutputOptions,
    display: &ProgressDisplay,
) -> Result<InventorySummary, String> {
    let (read_end, write_end) = pipe()?;
    match Connection::open(&crate::admin::socket_path(root)) {
        Ok(mut connection) => {
            connection.send(&Request::Inventory {}, &[write_end.as_fd()]).map_err(|e| e.to_string())?;
            drop(write_end);
            std::thread::scope(|scope| {
                let answer = scope.spawn(|| connection.answer(|p| display.event(&p)));
                let copied = copy_into_output(read_end, output, display);
                let answer =
                    answer.join().unwrap_or_else(|_| Err(ClientError::Failed("the answer's reader panicked".into())));
                let (inventory, output) =
                    finish(copied, answer.map_err(|e| e.to_string()).and_then(|v| from_value(&v)))?;
                Ok(InventorySummary { inventory, output })
            })
        }
        Err(ClientError::NoDaemon { .. }) => with_store_directly(root, Missing::Refuse, |store| {
            std::thread::scope(|scope| {
                let writer =
                    scope.spawn(move || write_inventory(store, &mut File::from(write_end)).map_err(|e| e.to_string()));
                let copied = copy_into_output(read_end, output, display);
                let written = writer.join().unwrap_or_else(|_| Err("the inventory thread panicked".into()));
                let (inventory, output) = finish(copied, written)?;
                Ok(InventorySummary { inventory, output })
            })
        }),
        Err(e) => Err(e.to_string()),
    }
}
