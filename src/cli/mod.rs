//! The `pier` subcommands. Each returns the process exit code.

pub mod htpasswd;
pub mod serve;

pub const USAGE: &str = "\
pier: a lean OCI container image registry

usage:
  pier serve [--config FILE | FILE]   run the registry (embedded defaults without a file:
                                      listen on :5000, data in ./pier-data)
  pier htpasswd add|remove|list ...   manage the htpasswd file (bcrypt), see `pier htpasswd`
  pier --version                      print the version
  pier help                           this text

Configuration is Distribution's config.yml (see README.md); REGISTRY_* environment
variables override it (e.g. REGISTRY_HTTP_ADDR=127.0.0.1:5000).
";

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

pub fn main(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        Some("serve") => serve::run(&args[1..]),
        Some("htpasswd") => htpasswd::run(&args[1..]),
        Some("--version") | Some("-V") | Some("version") => {
            println!("pier {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("help") | Some("--help") | Some("-h") => {
            print!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("pier: unknown command {other:?}\n\n{USAGE}");
            EXIT_USAGE
        }
        None => {
            eprint!("{USAGE}");
            EXIT_USAGE
        }
    }
}
