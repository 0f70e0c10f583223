//! Where `pier export` puts the tar stream it reads from the pipe: stdout, or a file, whole or
//! in volumes, zstd-compressed or not (ARCHITECTURE.md, "Bundles").
//!
//! Invariants: nothing that looks complete exists before the export succeeded. Each file is
//! written as `NAME.partial`, fsynced, and renamed to `NAME` only by [`BundleOutput::finish`],
//! after the whole stream was written; [`BundleOutput::abandon`] (and dropping an unfinished
//! output) removes the partial files. Volumes are `FILE.000`, `FILE.001`, ...: raw slices of
//! the (compressed) stream, each exactly the volume size but the last; volumes of an earlier
//! export that continue the new sequence are removed when the new one is in place.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The zstd level of `--zstd` (zstd's default: fast, and most of a bundle is already gzip).
const ZSTD_LEVEL: i32 = 3;

/// Where the bundle goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

/// How the bundle is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputOptions {
    pub target: Target,
    pub zstd: bool,
    /// Volume size in bytes (files only).
    pub split: Option<u64>,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// The files, in order (none for stdout).
    pub files: Vec<PathBuf>,
    /// Bytes written (after compression).
    pub bytes: u64,
    pub zstd: bool,
}

/// The bundle being written.
pub struct BundleOutput {
    sink: Sink,
}

enum Sink {
    Plain(Volumes),
    Zstd(zstd::stream::write::Encoder<'static, Volumes>),
}

impl BundleOutput {
    /// Opens the first file (or stdout).
    pub fn create(options: &OutputOptions) -> io::Result<BundleOutput> {
        let volumes = Volumes::new(options)?;
        let sink = if options.zstd {
            Sink::Zstd(zstd::stream::write::Encoder::new(volumes, ZSTD_LEVEL)?)
        } else {
            Sink::Plain(volumes)
        };
        Ok(BundleOutput { sink })
    }

    /// Ends the stream (the zstd frame), syncs the files and gives them their names.
    pub fn finish(self) -> io::Result<Written> {
        let zstd = matches!(self.sink, Sink::Zstd(_));
        let volumes = match self.sink {
            Sink::Plain(v) => v,
            Sink::Zstd(encoder) => encoder.finish()?,
        };
        let mut written = volumes.finish()?;
        written.zstd = zstd;
        Ok(written)
    }

    /// Gives up: the partial files are removed.
    pub fn abandon(self) {
        drop(self);
    }
}

impl Write for BundleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Plain(v) => v.write(buf),
            Sink::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(v) => v.flush(),
            Sink::Zstd(e) => e.flush(),
        }
    }
}

/// The files (or stdout) the bytes go to, cut into volumes.
struct Volumes {
    target: Target,
    split: Option<u64>,
    /// The open file and the bytes in it.
    current: Option<(File, u64)>,
    /// Final names of the files opened so far (each written as `NAME.partial`).
    names: Vec<PathBuf>,
    bytes: u64,
    finished: bool,
}

impl Volumes {
    fn new(options: &OutputOptions) -> io::Result<Volumes> {
        let mut v = Volumes {
            target: options.target.clone(),
            split: options.split.filter(|_| options.target != Target::Stdout),
            current: None,
            names: Vec::new(),
            bytes: 0,
            finished: false,
        };
        if let Target::File(_) = v.target {
            v.next_file()?;
        }
        Ok(v)
    }

    fn name(&self, index: usize) -> Option<PathBuf> {
        let Target::File(path) = &self.target else { return None };
        Some(match self.split {
            None => path.clone(),
            Some(_) => volume_name(path, index),
        })
    }

    fn next_file(&mut self) -> io::Result<()> {
        if let Some((file, _)) = self.current.take() {
            file.sync_all()?;
        }
        let Some(name) = self.name(self.names.len()) else { return Ok(()) };
        let partial = partial_name(&name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", partial.display())))?;
        self.names.push(name);
        self.current = Some((file, 0));
        Ok(())
    }

    fn finish(mut self) -> io::Result<Written> {
        if let Some((file, _)) = self.current.take() {
            file.sync_all()?;
        }
        if self.target == Target::Stdout {
            io::stdout().flush()?;
        }
        // Last volume first: should a rename fail, no first volume is there to start from.
        for name in self.names.iter().rev() {
            std::fs::rename(partial_name(name), name)?;
        }
        if let (Target::File(path), Some(_)) = (&self.target, self.split) {
            // Volumes of an earlier, longer export would read as a continuation of this one.
            let mut stale = self.names.len();
            while std::fs::remove_file(volume_name(path, stale)).is_ok() {
                stale += 1;
            }
        }
        if let Some(dir) = self.names.first().and_then(|n| n.parent()) {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            File::open(dir)?.sync_all()?;
        }
        self.finished = true;
        Ok(Written { files: std::mem::take(&mut self.names), bytes: self.bytes, zstd: false })
    }
}

impl Write for Volumes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.target == Target::Stdout {
            let n = io::stdout().lock().write(buf)?;
            self.bytes += n as u64;
            return Ok(n);
        }
        if let (Some(limit), Some((_, used))) = (self.split, &self.current) {
            if *used >= limit {
                self.next_file()?;
            }
        }
        let Some((file, used)) = &mut self.current else {
            return Err(io::Error::other("the bundle's file is closed"));
        };
        let room = match self.split {
            Some(limit) => usize::try_from(limit - *used).unwrap_or(usize::MAX).min(buf.len()),
            None => buf.len(),
        };
        let n = file.write(&buf[..room])?;
        *used += n as u64;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match (&self.target, &mut self.current) {
            (Target::Stdout, _) => io::stdout().flush(),
            (_, Some((file, _))) => file.flush(),
            _ => Ok(()),
        }
    }
}

impl Drop for Volumes {
    /// An unfinished output leaves nothing behind.
    fn drop(&mut self) {
        if !self.finished {
            self.current = None;
            for name in &self.names {
                let _ = std::fs::remove_file(partial_name(name));
            }
        }
    }
}

/// Volume `index` of `path`: `path.000`, `path.001`, ...
pub fn volume_name(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index:03}"));
    PathBuf::from(name)
}

fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn volumes_cut_the_stream_and_appear_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        std::fs::write(volume_name(&path, 3), b"stale").unwrap();
        let options = OutputOptions { target: Target::File(path.clone()), zstd: false, split: Some(10) };
        let mut out = BundleOutput::create(&options).unwrap();
        let data: Vec<u8> = (0..35u8).collect();
        out.write_all(&data[..7]).unwrap();
        out.write_all(&data[7..]).unwrap();
        assert!(!volume_name(&path, 0).exists(), "nothing under its final name before finish");
        let written = out.finish().unwrap();
        assert_eq!(written.files, (0..4).map(|i| volume_name(&path, i)).collect::<Vec<_>>());
        assert_eq!(written.bytes, 35);
        let mut joined = Vec::new();
        for f in &written.files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len == 10 || f == written.files.last().unwrap(), "{f:?}: {len}");
            File::open(f).unwrap().read_to_end(&mut joined).unwrap();
        }
        assert_eq!(joined, data);
        assert!(!volume_name(&path, 4).exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4, "no partial or stale file left");
    }

    #[test]
    fn an_abandoned_output_leaves_nothing_and_zstd_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar.zst");
        let options = OutputOptions { target: Target::File(path.clone()), zstd: true, split: None };
        let mut out = BundleOutput::create(&options).unwrap();
        out.write_all(b"half a bundle").unwrap();
        out.abandon();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut out = BundleOutput::create(&options).unwrap();
        out.write_all(&[7u8; 100_000]).unwrap();
        let written = out.finish().unwrap();
        assert!(written.zstd && written.bytes < 1000, "{written:?}");
        let plain = zstd::stream::decode_all(File::open(&path).unwrap()).unwrap();
        assert_eq!(plain, vec![7u8; 100_000]);
    }
}
