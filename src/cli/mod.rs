//! The `pier` subcommands. Each returns the process exit code.

use std::ffi::OsString;

mod bundle_out;
pub mod du;
pub mod export;
pub mod fsck;
pub mod gc;
pub mod htpasswd;
pub mod import;
pub mod inventory;
pub mod migrate;
mod privileges;
pub mod progress;
pub mod retention;
pub mod scrub;
pub mod serve;
pub mod status;
mod store_access;
mod watchdog;

pub const USAGE: &str = "\
pier: a lean OCI container image registry

usage:
  pier serve [--config FILE | FILE]   run the registry (embedded defaults without a file:
                                      listen on :5000, data in ./pier-data)
  pier htpasswd add|remove|list ...   manage the htpasswd file (bcrypt), see `pier htpasswd`
  pier migrate [--config FILE] [--json] [--dry-run] [DIR]
                                      import registry:2 data (DIR/docker/registry/v2, DIR
                                      defaults to the root directory) in place
  pier import [--config FILE] [--json] [--repo NAME | --repo OLD=NEW]... FILE...
                                      load bundles, OCI archives and layouts, docker save
                                      archives (digests verified; see `pier import --help`)
  pier du [--config FILE] [--json] [REPO]
                                      disk usage per repository, deduplication, what gc
                                      would free
  pier gc [--config FILE] [--dry-run] [--grace DURATION] [--untagged] [--full] [--json]
                                      remove what no manifest needs, while serving (see
                                      `pier gc --help`)
  pier retention [--config FILE] [--dry-run] [--json]
                                      drop the tags the retention: policies name
  pier scrub [--config FILE] [--json]  re-hash every blob; quarantine corrupt ones (exit 1)
  pier export REF... -o FILE|- [--all] [--from-list FILE] [--platform OS/ARCH]...
              [--exclude-inventory FILE] [--zstd] [--split SIZE] [--json] [--config FILE]
                                      write a bundle of images for an air-gapped site (see
                                      `pier export --help`)
  pier inventory -o FILE|- [--json] [--config FILE]
                                      list what this registry holds, for a delta export
  pier fsck [--config FILE] [--repair] [--json]
                                      check files, layouts and derived metadata against the
                                      metadata; --repair rebuilds them (exit 1: still broken)
  pier status [--config FILE] [--json]
                                      what the running daemon serves and the store holds (read
                                      directly when no daemon runs)
  pier --version                      print the version
  pier help                           this text

Configuration is Distribution's config.yml (see README.md); REGISTRY_* environment
variables override it (e.g. REGISTRY_HTTP_ADDR=127.0.0.1:5000).
";

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

/// Runs the command line `args` (without the program name). Arguments are `OsString`s: paths
/// may be any bytes; where a string is required, one that is not UTF-8 is a usage error.
pub fn main(args: Vec<OsString>) -> i32 {
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return EXIT_USAGE;
    };
    match command.to_str() {
        Some("serve") => serve::run(&args[1..]),
        Some("htpasswd") => htpasswd::run(&args[1..]),
        Some("migrate") => migrate::run(&args[1..]),
        Some("import") => import::run(&args[1..]),
        Some("status") => status::run(&args[1..]),
        Some("gc") => gc::run(&args[1..]),
        Some("du") => du::run(&args[1..]),
        Some("scrub") => scrub::run(&args[1..]),
        Some("fsck") => fsck::run(&args[1..]),
        Some("retention") => retention::run(&args[1..]),
        Some("export") => export::run(&args[1..]),
        Some("inventory") => inventory::run(&args[1..]),
        Some("--version") | Some("-V") | Some("version") => {
            println!("pier {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("help") | Some("--help") | Some("-h") => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprintln!("pier: unknown command {command:?}\n\n{USAGE}");
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    #[test]
    fn a_command_that_is_not_utf8_is_a_usage_error() {
        assert_eq!(main(vec![OsString::from_vec(b"serv\xe9".to_vec())]), EXIT_USAGE);
        assert_eq!(main(vec![OsString::from("frobnicate")]), EXIT_USAGE);
        assert_eq!(main(Vec::new()), EXIT_USAGE);
        assert_eq!(main(vec![OsString::from("--version")]), 0);
    }
}
