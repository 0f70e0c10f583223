//! `pier import [--config FILE] [--json] [--repo NAME | --repo OLD=NEW]... FILE...`: loads
//! bundles and archives into the store. This module owns the command's side of ARCHITECTURE.md
//! "Bundles": the files. It opens them with the invoking user's rights, reads volumes in order
//! (`X.000 X.001 …`, given all, or `X.000` alone and the rest found next to it), recognises
//! compression by its magic bytes (zstd, gzip), turns an OCI layout directory into a tar
//! stream, and hands the store a **plain tar stream**: through a pipe passed to the running
//! daemon on `admin.sock` (`Request::Import`), or, when no daemon runs, to the store opened
//! here (`bundle::import` either way, so the result does not depend on the path).
//!
//! Each input is one import (the inputs are imported one after the other; the first failure
//! stops the command). Output: a progress bar on a terminal, one line per image otherwise,
//! or with `--json` one JSON document (`{"imports": [report, …]}`) on stdout.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::progress::ProgressDisplay;
use super::store_access::{with_store_directly, Missing};
use crate::admin::client::{ClientError, Connection};
use crate::admin::protocol::Request;
use crate::bundle::import::{self as importer, ImportReport};
use crate::config::Config;
use crate::store::Store;

const USAGE: &str = "\
usage:
  pier import [--config FILE] [--json] [--repo NAME | --repo OLD=NEW]... FILE...

Loads images into pier's store: pier bundles (`pier export`; compressed or not, whole or in
volumes FILE.000 FILE.001 ...: give them all, or FILE.000 alone), OCI archives (`skopeo copy
... oci-archive:FILE`), OCI layout directories, and `docker save` archives (.tar or .tar.gz).
Every digest is verified before anything becomes visible; blobs the store has are skipped.
Through the running daemon when there is one, else on the store directly.
  --repo NAME      put the images of a single-repository archive (or one naming images by
                   tag only) into repository NAME
  --repo OLD=NEW   rename repository OLD of the archive to NEW (may be repeated)
  --json           the reports as JSON on stdout
Exit status 0 when every input was imported, 1 when one failed, 2 for usage errors.
";

/// Copy buffer between the files and the pipe.
const COPY_BUFFER: usize = 1 << 20;

struct Command {
    config: Option<PathBuf>,
    json: bool,
    repository: Option<String>,
    renames: Vec<[String; 2]>,
    files: Vec<PathBuf>,
}

/// One thing to import: files read one after the other (volumes), or a layout directory.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Files(Vec<PathBuf>),
    Layout(PathBuf),
}

impl Input {
    fn describe(&self) -> String {
        match self {
            Input::Files(files) if files.len() > 1 => {
                format!("{} ({} volumes)", files[0].display(), files.len())
            }
            Input::Files(files) => files.first().map(|f| f.display().to_string()).unwrap_or_default(),
            Input::Layout(dir) => format!("{} (OCI layout)", dir.display()),
        }
    }
}

#[derive(Serialize)]
struct Output<'a> {
    imports: &'a [ImportReport],
}

pub fn run(args: &[OsString]) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return 0;
    }
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pier import: {e}\n\n{USAGE}");
            return super::EXIT_USAGE;
        }
    };
    let config_args: Vec<OsString> = match &cmd.config {
        Some(c) => vec![OsString::from("--config"), c.clone().into_os_string()],
        None => Vec::new(),
    };
    let config = match super::store_access::load_config("import", &config_args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Names are checked before any file is read.
    if let Err(e) = importer::options(cmd.repository.as_deref(), &cmd.renames) {
        eprintln!("pier import: {e}");
        return super::EXIT_USAGE;
    }
    let inputs = match group_inputs(&cmd.files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("pier import: {e}");
            return 1;
        }
    };
    let display = ProgressDisplay::new("import", cmd.json);
    let mut reports = Vec::new();
    for input in &inputs {
        match import_one(&config, &cmd, input, &display) {
            Ok(report) => {
                display.finish();
                if !cmd.json {
                    println!("{}: {}", input.describe(), report.summary());
                }
                reports.push(report);
            }
            Err(e) => {
                display.finish();
                eprintln!("pier import: {}: {e}", input.describe());
                if cmd.json {
                    super::store_access::print_json("import", &Output { imports: &reports });
                }
                return 1;
            }
        }
    }
    if cmd.json {
        return super::store_access::print_json("import", &Output { imports: &reports });
    }
    0
}

fn parse(args: &[OsString]) -> Result<Command, String> {
    let mut cmd = Command { config: None, json: false, repository: None, renames: Vec::new(), files: Vec::new() };
    let mut it = args.iter();
    let mut only_files = false;
    while let Some(arg) = it.next() {
        if only_files {
            cmd.files.push(PathBuf::from(arg));
            continue;
        }
        match arg.to_str() {
            Some("--") => only_files = true,
            Some("--json") => cmd.json = true,
            Some("--config") => {
                cmd.config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?));
            }
            Some("--repo") => {
                let value = it.next().ok_or("--repo needs NAME or OLD=NEW")?;
                let value = value.to_str().ok_or("--repo: not UTF-8")?;
                match value.split_once('=') {
                    Some((old, new)) => cmd.renames.push([old.to_string(), new.to_string()]),
                    None if cmd.repository.is_some() => return Err(String::from("--repo NAME given twice")),
                    None => cmd.repository = Some(value.to_string()),
                }
            }
            Some(s) if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => cmd.files.push(PathBuf::from(arg)),
        }
    }
    if cmd.files.is_empty() {
        return Err(String::from("no FILE to import"));
    }
    if cmd.repository.is_some() && !cmd.renames.is_empty() {
        return Err(String::from("--repo NAME and --repo OLD=NEW exclude each other"));
    }
    Ok(cmd)
}

/// The volume number of `FILE.NNN` (three or more digits) and `FILE`.
fn volume(path: &Path) -> Option<(PathBuf, u64)> {
    let name = path.file_name()?.to_str()?;
    let (stem, number) = name.rsplit_once('.')?;
    if number.len() < 3 || !number.bytes().all(|b| b.is_ascii_digit()) || stem.is_empty() {
        return None;
    }
    Some((path.with_file_name(stem), number.parse().ok()?))
}

/// The path of volume `n` of `base`, numbered as wide as `like`'s number.
fn volume_path(base: &Path, n: u64, width: usize) -> PathBuf {
    let mut name = base.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{n:0width$}"));
    base.with_file_name(name)
}

/// The inputs the command line names: directories are layouts; `X.000 X.001 …` given in a
/// row is one input, and so is `X.000` alone with the volumes found next to it.
fn group_inputs(files: &[PathBuf]) -> Result<Vec<Input>, String> {
    let mut inputs = Vec::new();
    let mut i = 0;
    while i < files.len() {
        let f = &files[i];
        i += 1;
        if f.is_dir() {
            inputs.push(Input::Layout(f.clone()));
            continue;
        }
        let Some((base, first)) = volume(f).filter(|(_, n)| *n == 0) else {
            if let Some((base, n)) = volume(f) {
                let first = volume_path(&base, 0, width_of(f));
                if first.exists() {
                    return Err(format!(
                        "{} is volume {n} of {}: give the first volume first",
                        f.display(),
                        base.display()
                    ));
                }
            }
            inputs.push(Input::Files(vec![f.clone()]));
            continue;
        };
        let width = width_of(f);
        let mut volumes = vec![f.clone()];
        let mut next = first + 1;
        // Volumes given in a row.
        while i < files.len() && volume(&files[i]).is_some_and(|(b, n)| b == base && n == next) {
            volumes.push(files[i].clone());
            i += 1;
            next += 1;
        }
        if volumes.len() == 1 {
            // Only the first: the others are found next to it, in order.
            loop {
                let candidate = volume_path(&base, next, width);
                if !candidate.is_file() {
                    break;
                }
                volumes.push(candidate);
                next += 1;
            }
        }
        inputs.push(Input::Files(volumes));
    }
    Ok(inputs)
}

fn width_of(path: &Path) -> usize {
    path.extension().map_or(3, |e| e.len())
}

/// Files read one after the other, counting bytes for the progress display.
struct Volumes {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, File)>,
    display: ProgressDisplay,
}

impl Read for Volumes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.next() else { return Ok(0) };
                let file =
                    File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                self.current = Some((path, file));
            }
            let Some((path, file)) = self.current.as_mut() else { return Ok(0) };
            match file.read(buf) {
                Ok(0) => self.current = None,
                Ok(n) => {
                    self.display.advance(n as u64);
                    return Ok(n);
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
    }
}

/// The plain tar stream of `input`: volumes concatenated, decompressed by magic bytes; a
/// layout directory written as a tar by a thread of its own.
fn plain_tar(input: &Input, display: &ProgressDisplay) -> io::Result<Box<dyn Read + Send>> {
    match input {
        Input::Layout(dir) => layout_as_tar(dir, display),
        Input::Files(files) => {
            let mut total = 0;
            for f in files {
                total +=
                    std::fs::metadata(f).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display())))?.len();
            }
            display.set_total(total);
            let raw = Volumes { files: files.clone().into_iter(), current: None, display: display.clone() };
            decompressed(BufReader::with_capacity(COPY_BUFFER, raw))
        }
    }
}

/// `reader` decompressed according to its first bytes (zstd, gzip), or as it is.
fn decompressed<R: BufRead + Send + 'static>(mut reader: R) -> io::Result<Box<dyn Read + Send>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::Decoder::with_buffer(reader)?))
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// An OCI image layout directory as a tar stream: `oci-layout`, `index.json` and every regular
/// file under `blobs/`, written into a pipe by a thread (its read end is returned). A failure
/// of that thread ends the stream early, which the import refuses as truncated (and the
/// thread says why on stderr).
fn layout_as_tar(dir: &Path, display: &ProgressDisplay) -> io::Result<Box<dyn Read + Send>> {
    for required in ["oci-layout", "index.json"] {
        if !dir.join(required).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is a directory but not an OCI image layout (no {required})", dir.display()),
            ));
        }
    }
    let (read, write) = pipe()?;
    let dir = dir.to_path_buf();
    let display = display.clone();
    std::thread::Builder::new().name("pier-layout-tar".into()).spawn(move || {
        let out = Counted { inner: File::from(write), display };
        if let Err(e) = write_layout_tar(&dir, out) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("pier import: reading the layout {}: {e}", dir.display());
            }
        }
    })?;
    Ok(Box::new(File::from(read)))
}

/// A writer that counts its bytes on the progress display.
struct Counted<W> {
    inner: W,
    display: ProgressDisplay,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.display.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_layout_tar(dir: &Path, out: impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(COPY_BUFFER, out));
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for name in ["oci-layout", "index.json"] {
        tar.append_path_with_name(dir.join(name), name)?;
    }
    let mut dirs = vec![PathBuf::from("blobs")];
    while let Some(rel) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else { continue };
        let mut entries: Vec<_> = entries.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let kind = e.file_type()?;
            let name = rel.join(e.file_name());
            if kind.is_dir() {
                dirs.push(name);
            } else if kind.is_file() {
                tar.append_path_with_name(e.path(), &name)?;
            }
        }
    }
    tar.into_inner()?.flush()
}

/// A pipe with a 1 MiB buffer where the kernel allows it (fewer wake-ups per byte than the
/// default 64 KiB; the default is kept otherwise).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe().map_err(io::Error::from)?;
    let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(COPY_BUFFER as nix::libc::c_int));
    Ok((read, write))
}

/// One input, through the daemon or on the store.
fn import_one(
    config: &Config,
    cmd: &Command,
    input: &Input,
    display: &ProgressDisplay,
) -> Result<ImportReport, String> {
    let root = config.root.as_path();
    let stream = plain_tar(input, display).map_err(|e| e.to_string())?;
    let request = Request::Import { repository: cmd.repository.clone(), renames: cmd.renames.clone() };
    match Connection::open(&crate::admin::socket_path(root)) {
        Ok(connection) => through_daemon(connection, &request, stream, display),
        Err(ClientError::NoDaemon { .. }) => on_store(config, cmd, stream, display),
        Err(e) => Err(e.to_string()),
    }
}

/// Passes the read end of a pipe with the request and writes the stream into the write end,
/// while another thread reads the daemon's answer.
fn through_daemon(
    mut connection: Connection,
    request: &Request,
    mut stream: Box<dyn Read + Send>,
    display: &ProgressDisplay,
) -> Result<ImportReport, String> {
    let (read, write) = pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    connection.send(request, &[read.as_fd()]).map_err(|e| e.to_string())?;
    drop(read);
    let answer_display = display.clone();
    let answer = std::thread::spawn(move || connection.answer(|p| answer_display.event(&p)));
    let mut pipe = File::from(write);
    // A daemon that stops reading (it refused the archive) closes its end: the write fails,
    // and its answer says why.
    let copied = io::copy(&mut stream, &mut pipe);
    drop(pipe);
    let answered = answer.join().map_err(|_| String::from("the thread reading the daemon's answer panicked"))?;
    match (answered, copied) {
        (Ok(result), _) => {
            serde_json::from_value(result).map_err(|e| format!("unexpected answer from the daemon: {e}"))
        }
        (Err(e), Err(copy)) if copy.kind() != io::ErrorKind::BrokenPipe => Err(format!("{copy} (the daemon: {e})")),
        (Err(e), _) => Err(e.to_string()),
    }
}

/// No daemon runs: the store is opened here (with the configuration's quotas and free-space
/// reserve, as `pier serve` would), and closed cleanly after.
fn on_store(
    config: &Config,
    cmd: &Command,
    stream: Box<dyn Read + Send>,
    display: &ProgressDisplay,
) -> Result<ImportReport, String> {
    let options = importer::options(cmd.repository.as_deref(), &cmd.renames)?;
    with_store_directly(&config.root, Missing::Create, |store| import_on(store, config, &options, stream, display))
}

/// [`on_store`]'s import, on the store it opened.
fn import_on(
    store: &Store,
    config: &Config,
    options: &importer::ImportOptions,
    stream: Box<dyn Read + Send>,
    display: &ProgressDisplay,
) -> Result<ImportReport, String> {
    store.set_quotas(config.quotas.clone());
    store.set_free_space_reserve(config.free_space_reserve);
    let mut progress = |message: &str| {
        if message.starts_with("imported ") {
            display.item(message);
        } else {
            display.phase(message);
        }
    };
    let result = importer::import(store, stream, options, &mut progress).map_err(|e| e.to_string());
    if result.is_ok() {
        if let Err(e) = store.stop_index_writer() {
            log::warn!("index.json not written (written at the next start): {e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_grouped_given_in_a_row_or_found_next_to_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        for n in ["b.000", "b.001", "b.002", "c.tar"] {
            std::fs::write(p(n), b"x").unwrap();
        }
        assert_eq!(group_inputs(&[p("b.000")]).unwrap(), vec![Input::Files(vec![p("b.000"), p("b.001"), p("b.002")])]);
        assert_eq!(
            group_inputs(&[p("b.000"), p("b.001"), p("c.tar")]).unwrap(),
            vec![Input::Files(vec![p("b.000"), p("b.001")]), Input::Files(vec![p("c.tar")])]
        );
        assert!(group_inputs(&[p("b.001")]).is_err());
        assert_eq!(group_inputs(&[dir.path().to_path_buf()]).unwrap(), vec![Input::Layout(dir.path().to_path_buf())]);
    }
}
