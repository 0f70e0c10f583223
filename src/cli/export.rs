//! `pier export REF... -o FILE|-`: writes a bundle (ARCHITECTURE.md, "Bundles").
//!
//! The tar stream is made by the running daemon (`Request::Export` over `admin.sock`, with the
//! write end of a pipe and, for a delta, the inventory file) or, when no daemon runs, by the
//! same code on the store opened here, on a thread writing into a pipe. Either way this command
//! reads the pipe and owns the files: the inventory and the list of references are opened with
//! the invoking user's rights, the output is compressed and cut into volumes here
//! (`cli::bundle_out`), and appears under its name only when the export
//! succeeded. [`export_from_source`] is the in-process path for any `BundleSource` (the remote
//! registry of `--from URL` uses it too: then no store, daemon or configuration is involved).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::bundle_out::{BundleOutput, OutputOptions, Target, Written};
use super::progress::ProgressDisplay;
use super::store_access::{load_config, with_store_directly, Missing};
use crate::admin::client::{ClientError, Connection};
use crate::admin::human_bytes;
use crate::admin::protocol::{Request, MAX_REQUEST};
use crate::bundle::export::{export, Exclusion, ExportEvent, ExportReport, ExportRequest};
use crate::bundle::source::BundleSource;
use crate::remote::options::{take_remote_options, PASSWORD_ENV, USAGE as REMOTE_USAGE};
use crate::remote::{RemoteConfig, RemoteRegistry};

pub const USAGE: &str = "\
usage: pier export REF... -o FILE|- [--all] [--from-list FILE] [--platform OS/ARCH[/VARIANT]]...
                   [--exclude-inventory FILE] [--zstd] [--split SIZE] [--json] [--config FILE]
                   [--from URL [--username USER] [--password-stdin] [--ca FILE]...]

Writes one bundle (an OCI image layout as a tar stream, with pier-bundle.json and docker's
manifest.json) holding the images named, their index children, and their referrers
(signatures, SBOMs), each blob once. Runs in the daemon while it serves, or on the store when
no daemon runs. `skopeo copy oci-archive:FILE:REPO:TAG ...`, `docker load -i FILE` and
`pier import FILE` read it.
  REF                      repo:tag, repo@digest, or repo (every tag of it)
  -o, --output FILE|-      the bundle (- : stdout); written as FILE.partial, renamed when complete
  --all                    every tag of every repository
  --from-list FILE         more references, one per line (# comments, blank lines ignored)
  --platform P             keep only these platforms of a multi-platform index (repeatable);
                           an index that loses children is rewritten (a new digest)
  --exclude-inventory FILE leave out the blobs a site already has (its `pier inventory`): a
                           delta, which only `pier import` at that site can load
  --zstd                   compress the whole bundle (also when FILE ends in .zst)
  --split SIZE             cut into volumes FILE.000, FILE.001, ... of SIZE (e.g. 4GiB, 3900M)
  --json                   the report as JSON on stdout (on stderr with -o -)
";

/// What `pier export` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    #[serde(flatten)]
    pub export: ExportReport,
    pub output: Written,
}

/// The command line, parsed.
struct Options {
    request: ExportRequest,
    output: OutputOptions,
    inventory: Option<PathBuf>,
    json: bool,
    config_args: Vec<OsString>,
}

pub fn run(args: &[OsString]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}{REMOTE_USAGE}");
        return 0;
    }
    let (remote, args) = match take_remote_options(args, std::env::var_os(PASSWORD_ENV), &mut std::io::stdin().lock()) {
        Ok(taken) => taken,
        Err(message) => {
            eprintln!("pier export: {message}\n\n{USAGE}{REMOTE_USAGE}");
            return super::EXIT_USAGE;
        }
    };
    let options = match parse(&args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("pier export: {message}\n\n{USAGE}");
            return super::EXIT_USAGE;
        }
    };
    if options.request.references.is_empty() && !options.request.all {
        eprintln!("pier export: nothing to export: name references, --all or --from-list FILE\n\n{USAGE}");
        return super::EXIT_USAGE;
    }
    if let Some(remote) = remote {
        if !options.config_args.is_empty() {
            eprintln!("pier export: --config names a local store; --from reads a remote registry instead");
            return super::EXIT_USAGE;
        }
        let display = ProgressDisplay::new("export", options.json);
        let result = export_from_remote(&remote, &options, &display);
        display.finish();
        return report(result, &options);
    }
    let config = match load_config("export", &options.config_args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let display = ProgressDisplay::new("export", options.json);
    let result = export_via_daemon_or_store(&config.root, &options, &display);
    display.finish();
    report(result, &options)
}

fn parse(args: &[OsString]) -> Result<Options, String> {
    let mut request = ExportRequest::default();
    let mut target = None;
    let (mut zstd, mut json, mut split, mut inventory) = (false, false, None, None);
    let mut config_args = Vec::new();
    let mut it = args.iter();
    let text = |a: Option<&OsString>, what: &str| -> Result<String, String> {
        a.and_then(|a| a.to_str()).map(str::to_string).ok_or_else(|| format!("{what} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-o" | "--output") => {
                let value = it.next().ok_or("--output needs a file (or - for stdout)")?;
                target = Some(if value == "-" { Target::Stdout } else { Target::File(PathBuf::from(value)) });
            }
            Some("--all") => request.all = true,
            Some("--zstd") => zstd = true,
            Some("--json") => json = true,
            Some("--platform") => request.platforms.push(text(it.next(), "--platform")?),
            Some("--split") => {
                let value = text(it.next(), "--split")?;
                let size = crate::core::size::parse(&value).map_err(|e| format!("--split {value:?}: {e}"))?;
                if size == 0 {
                    return Err("--split needs a size above 0".into());
                }
                split = Some(size);
            }
            Some("--exclude-inventory") => {
                inventory = Some(PathBuf::from(it.next().ok_or("--exclude-inventory needs a file")?))
            }
            Some("--from-list") => {
                let path = PathBuf::from(it.next().ok_or("--from-list needs a file")?);
                let list = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                request.references.extend(
                    list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
                );
            }
            Some("--config" | "-c") => {
                config_args.push(arg.clone());
                config_args.push(it.next().ok_or("--config needs a file")?.clone());
            }
            Some(a) if a.starts_with("--config=") => config_args.push(arg.clone()),
            Some(r) if !r.starts_with('-') => request.references.push(r.to_string()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let target = target.ok_or("-o FILE (or -o - for stdout) is required")?;
    if let Target::File(path) = &target {
        zstd |= path.extension().is_some_and(|e| e == "zst");
    }
    if split.is_some() && target == Target::Stdout {
        return Err("--split writes files: it needs -o FILE".into());
    }
    Ok(Options { request, output: OutputOptions { target, zstd, split }, inventory, json, config_args })
}

/// `--from URL`: the remote registry is the source, read on this process's export thread; its
/// `GET /v2/` is asked first, so an unreachable registry or refused credentials stop the
/// command before any output exists.
fn export_from_remote(
    remote: &RemoteConfig,
    options: &Options,
    display: &ProgressDisplay,
) -> Result<ExportSummary, String> {
    let exclusion = match &options.inventory {
        Some(path) => {
            let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(Exclusion::read(file).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let registry = RemoteRegistry::connect(remote).map_err(|e| e.to_string())?;
    registry.check().map_err(|e| e.to_string())?;
    export_from_source(&registry, &options.request, exclusion.as_ref(), &options.output, display)
}

/// Through the daemon's admin channel when one runs; else on the store opened here.
fn export_via_daemon_or_store(
    root: &std::path::Path,
    options: &Options,
    display: &ProgressDisplay,
) -> Result<ExportSummary, String> {
    let inventory = match &options.inventory {
        Some(path) => Some(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    match Connection::open(&crate::admin::socket_path(root)) {
        Ok(connection) => through_daemon(connection, options, inventory, display),
        Err(ClientError::NoDaemon { .. }) => {
            let exclusion = inventory.map(Exclusion::read).transpose().map_err(|e| e.to_string())?;
            with_store_directly(root, Missing::Refuse, |store| {
                export_from_source(store, &options.request, exclusion.as_ref(), &options.output, display)
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

fn through_daemon(
    mut connection: Connection,
    options: &Options,
    inventory: Option<File>,
    display: &ProgressDisplay,
) -> Result<ExportSummary, String> {
    let (read_end, write_end) = pipe()?;
    let request = Request::Export {
        references: options.request.references.clone(),
        all: options.request.all,
        platforms: options.request.platforms.clone(),
        exclude_inventory: inventory.is_some(),
    };
    let line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    if line.len() >= MAX_REQUEST {
        return Err(format!(
            "{} references do not fit one request to the daemon ({} bytes, at most {MAX_REQUEST}): name \
             repositories (every tag) or use --all, or export in several bundles",
            options.request.references.len(),
            line.len()
        ));
    }
    let mut fds = vec![write_end.as_fd()];
    if let Some(file) = &inventory {
        fds.push(file.as_fd());
    }
    connection.send(&request, &fds).map_err(|e| e.to_string())?;
    drop(fds);
    // The daemon has its own copies: with ours closed, the pipe ends when the daemon's does.
    drop((write_end, inventory));
    std::thread::scope(|scope| {
        let answer = scope.spawn(|| connection.answer(|p| display.event(&p)));
        let copied = copy_into_output(read_end, &options.output, display);
        let answer = answer.join().unwrap_or_else(|_| Err(ClientError::Failed("the answer's reader panicked".into())));
        let (export, output) = finish(copied, answer.map_err(|e| e.to_string()).and_then(|v| from_value(&v)))?;
        Ok(ExportSummary { export, output })
    })
}

/// Exports from `source` on a thread of this process into a pipe that this thread reads into
/// the output: the path without a daemon, for the store and for a remote registry alike.
pub fn export_from_source(
    source: &dyn BundleSource,
    request: &ExportRequest,
    exclusion: Option<&Exclusion>,
    output: &OutputOptions,
    display: &ProgressDisplay,
) -> Result<ExportSummary, String> {
    let (read_end, write_end) = pipe()?;
    std::thread::scope(|scope| {
        let exporter = scope.spawn(move || {
            let mut pipe = File::from(write_end);
            let mut progress = |event: ExportEvent| match event {
                ExportEvent::Image(message) => display.item(&message),
                ExportEvent::Planned { stream_bytes } => display.set_total(stream_bytes),
            };
            export(source, request, exclusion, &mut pipe, &mut progress).map_err(|e| e.to_string())
            // The pipe closes here: the reader sees the end of the stream.
        });
        let copied = copy_into_output(read_end, output, display);
        let exported = exporter.join().unwrap_or_else(|_| Err("the export thread panicked".into()));
        let (export, output) = finish(copied, exported)?;
        Ok(ExportSummary { export, output })
    })
}

/// The output when the producer succeeded and every byte was written; nothing otherwise.
pub(super) fn finish<T>(
    copied: Result<BundleOutput, String>,
    produced: Result<T, String>,
) -> Result<(T, Written), String> {
    match (copied, produced) {
        (Ok(output), Ok(report)) => {
            let written = output.finish().map_err(|e| format!("writing {e}"))?;
            Ok((report, written))
        }
        (Ok(output), Err(e)) => {
            output.abandon();
            Err(e)
        }
        // Our side failed first (the exporter then saw its pipe close): ours is the cause.
        (Err(e), _) => Err(e),
    }
}

/// Reads the pipe to its end into a new output.
pub(super) fn copy_into_output(
    read_end: OwnedFd,
    options: &OutputOptions,
    display: &ProgressDisplay,
) -> Result<BundleOutput, String> {
    let mut pipe = File::from(read_end);
    let mut output = BundleOutput::create(options).map_err(|e| format!("creating the bundle: {e}"))?;
    let mut buf = vec![0u8; crate::bundle::tar_out::WRITE_BUFFER];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok(output),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the export's stream: {e}")),
        };
        output.write_all(&buf[..n]).map_err(|e| format!("writing the bundle: {e}"))?;
        display.advance(n as u64);
    }
}

/// A pipe (read end, write end), close-on-exec, with a 1 MiB buffer where the kernel allows
/// it (the default 64 KiB costs a context switch per 64 KiB of bundle).
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let _ = nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((read_end, write_end))
}

pub(super) fn from_value<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("unexpected answer from the daemon: {e}"))
}

/// Prints the summary (stdout, or stderr when the bundle went to stdout); the exit code.
fn report(result: Result<ExportSummary, String>, options: &Options) -> i32 {
    let summary = match result {
        Ok(s) => s,
        Err(message) => {
            eprintln!("pier export: {message}");
            return 1;
        }
    };
    let text = if options.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("pier export: {e}");
                return 1;
            }
        }
    } else {
        summary_line(&summary)
    };
    if options.output.target == Target::Stdout {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    0
}

fn summary_line(s: &ExportSummary) -> String {
    let e = &s.export;
    let mut line = format!(
        "exported {} image(s): {} blob(s), {} in {} ms",
        e.images.len(),
        e.blobs,
        human_bytes(e.bytes),
        e.elapsed_ms
    );
    if !s.output.files.is_empty() {
        let names: Vec<String> = s.output.files.iter().map(|f| f.display().to_string()).collect();
        line.push_str(&format!("; written to {}", names.join(", ")));
    }
    if s.output.zstd {
        line.push_str(&format!(" (zstd: {} of {})", human_bytes(s.output.bytes), human_bytes(e.stream_bytes)));
    }
    if let Some(inventory) = &e.inventory {
        line.push_str(&format!(
            "; delta against inventory {inventory}: {} blob(s) left out, {} saved",
            e.excluded_blobs,
            human_bytes(e.excluded_bytes)
        ));
    }
    line
}
