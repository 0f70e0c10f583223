//! `pier migrate [--config FILE] [--json] [--dry-run] [DIR]`: import the data a `registry:2`
//! (CNCF Distribution) left in `DIR` (default: the configured root directory) into pier's store,
//! in place, and report; and the same at `pier serve`'s start-up ([`at_start`]). The import
//! itself is `store::migrate`; this module owns the command line, the report's output and the
//! start-up policy (once per tree, progress to the log and to systemd).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, Loaded};
use crate::store::migrate::{self, MigrationReport, Progress};
use crate::store::Store;
use crate::systemd::Notifier;

const USAGE: &str = "\
usage:
  pier migrate [--config FILE] [--json] [--dry-run] [DIR]

Imports the images a registry:2 (CNCF Distribution) stored in DIR/docker/registry/v2 into
pier's data directory (storage.filesystem.rootdirectory of the config), in place: blobs are
hardlinked (copied across filesystems), every digest is verified, the registry:2 files are
left as they are. DIR defaults to the root directory. Safe to interrupt and to run again.
  --json       the report as JSON on stdout
  --dry-run    write nothing; list what would be imported (every blob is still verified)
Stop `pier serve` on that data directory first. Exit status 0 when the migration ran to its
end (skipped items are in the report), 1 when it failed, 2 for usage errors.
";

/// How often, at most, `pier serve`'s start-up tells systemd it is still migrating.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How much longer systemd should wait for the start each time (`EXTEND_TIMEOUT_USEC`).
const EXTEND_START_BY: Duration = Duration::from_secs(60);

struct Command {
    config: Option<PathBuf>,
    dir: Option<PathBuf>,
    json: bool,
    dry_run: bool,
}

pub fn run(args: &[OsString]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pier migrate: {e}\n\n{USAGE}");
            return super::EXIT_USAGE;
        }
    };
    let Loaded { config, warnings } = match Config::load(cmd.config.as_deref(), std::env::vars_os()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("pier migrate: {e}");
            return super::EXIT_USAGE;
        }
    };
    if let Some(note) = crate::logging::init(config.log_level, config.log_format) {
        log::warn!("{note}");
    }
    for w in &warnings {
        log::warn!("{w}");
    }
    let dir = cmd.dir.clone().unwrap_or_else(|| config.root.clone());
    if !migrate::has_registry2_tree(&dir) {
        eprintln!("pier migrate: no registry:2 data in {} (no docker/registry/v2/repositories)", dir.display());
        return 1;
    }
    // A dry run creates nothing: it consults the store only if there is one.
    let store = if cmd.dry_run && !config.root.join("meta.redb").exists() {
        None
    } else {
        match Store::open(&config.root) {
            Ok(s) => {
                s.set_free_space_reserve(config.free_space_reserve);
                Some(s)
            }
            Err(e) => {
                eprintln!(
                    "pier migrate: cannot open the data directory {}: {e} (is `pier serve` running on it? stop it first)",
                    config.root.display()
                );
                return 1;
            }
        }
    };
    let report = match migrate::migrate(store.as_ref(), &dir, cmd.dry_run, &mut |_| {}) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pier migrate: {e} (what was imported stays; run it again to finish)");
            return 1;
        }
    };
    if let Some(store) = &store {
        // Every index.json the import changed is written now, and the database closed cleanly
        // (the next start opens it without a repair).
        if !cmd.dry_run {
            if let Err(e) = store.stop_index_writer() {
                log::warn!("index.json not written (written at the next start): {e}");
            }
        }
        if let Err(e) = store.close() {
            log::warn!("metadata not closed cleanly (repaired at the next start): {e}");
        }
    }
    if cmd.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("pier migrate: cannot write the report: {e}");
                return 1;
            }
        }
    } else {
        println!("{}", report.summary());
    }
    0
}

fn parse(args: &[OsString]) -> Result<Command, String> {
    let mut cmd = Command { config: None, dir: None, json: false, dry_run: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config" | "-c") => cmd.config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?)),
            Some("--json") => cmd.json = true,
            Some("--dry-run" | "-n") => cmd.dry_run = true,
            _ if !a.as_encoded_bytes().starts_with(b"-") && cmd.dir.is_none() => cmd.dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(cmd)
}

/// `pier serve`'s start-up: imports the registry:2 tree in the root directory unless there is
/// none or it was imported to the end once. Logs progress per repository (`store::migrate`) and
/// the report, tells systemd where it is (`STATUS`) and to wait longer (`EXTEND_TIMEOUT_USEC`).
/// Returns false when the migration failed (pier should not serve a half-imported store it
/// claims to have taken over; the next start resumes it).
pub fn at_start(store: &Store, root: &Path, notifier: &Notifier) -> bool {
    if !migrate::has_registry2_tree(root) {
        return true;
    }
    match store.registry2_migrated(root) {
        Ok(true) => {
            log::info!(
                "registry:2 data in {} was imported before (`pier migrate` imports anything newer)",
                root.display()
            );
            return true;
        }
        Ok(false) => {}
        Err(e) => {
            log::error!("cannot tell whether the registry:2 data was imported: {e}");
            return false;
        }
    }
    log::info!("registry:2 data found in {}: importing it before serving", root.display());
    let mut last = None::<Instant>;
    let mut tell = |p: Progress<'_>| {
        if last.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        last = Some(Instant::now());
        notifier.notify(&format!(
            "EXTEND_TIMEOUT_USEC={}\nSTATUS=importing registry:2 data: repository {}/{} ({})",
            EXTEND_START_BY.as_micros(),
            p.repository,
            p.repositories,
            p.name
        ));
    };
    match migrate::migrate(Some(store), root, false, &mut tell) {
        Ok(report) => {
            log_report(&report);
            true
        }
        Err(e) => {
            log::error!(
                "importing the registry:2 data failed: {e} (what was imported stays; the next start resumes; \
                 storage.filesystem.migrate: false skips the import)"
            );
            false
        }
    }
}

/// The report's summary line (each skipped item was logged as a warning when it was skipped).
fn log_report(report: &MigrationReport) {
    if let Some(first) = report.summary().lines().next() {
        log::info!("{first}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let os = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let c = parse(&os(&["--config", "c.yml", "--json", "--dry-run", "/data"])).unwrap();
        assert_eq!((c.config, c.dir, c.json, c.dry_run), (Some("c.yml".into()), Some("/data".into()), true, true));
        let c = parse(&os(&[])).unwrap();
        assert_eq!((c.config, c.dir, c.json, c.dry_run), (None, None, false, false));
        assert!(parse(&os(&["--config"])).is_err());
        assert!(parse(&os(&["a", "b"])).is_err());
        assert!(parse(&os(&["--frob"])).is_err());
    }
}
