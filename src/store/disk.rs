//! `Disk`: every file-system mutation of the store, and the seam through which tests break them.
//!
//! Each method is one step of the commit protocol (see ARCHITECTURE.md, "Commit protocol"):
//! create, write, fsync, fsync of a directory, rename, hard link, unlink, chmod, truncate, and the
//! redb commit. Every method that makes data visible under a final name fsyncs the directory
//! holding that name before returning, so an acknowledged write survives a power cut.
//!
//! In tests a [`faults::FaultPlan`] can be installed: it records every step and makes step N
//! fail with an I/O error (EIO, ENOSPC) or with a simulated crash, after which every later step
//! fails too, as if the process had died there (no clean-up runs). `store::tests::crash` drives
//! every operation of the store through every step that way. Reads are not steps: they change
//! nothing that a crash could leave half done.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::database::WriteTxn;
use super::error::{IoContext, Result};

/// One mutating step of the commit protocol, as a fault plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Create(PathBuf),
    Write(PathBuf),
    Fsync(PathBuf),
    FsyncDir(PathBuf),
    Mkdir(PathBuf),
    Rename(PathBuf, PathBuf),
    Link(PathBuf, PathBuf),
    Unlink(PathBuf),
    Chmod(PathBuf),
    Truncate(PathBuf),
    /// A redb write transaction is about to commit.
    Commit,
}

/// The store's file-system access (cheap to clone; the upload writer's threads hold one).
#[derive(Clone, Default)]
pub(crate) struct Disk {
    #[cfg(test)]
    faults: Option<std::sync::Arc<faults::FaultPlan>>,
}

impl Disk {
    #[cfg(test)]
    pub(crate) fn with_faults(plan: std::sync::Arc<faults::FaultPlan>) -> Disk {
        Disk { faults: Some(plan) }
    }

    /// Announces a step; a fault plan may fail it.
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(crate) fn step(&self, step: impl FnOnce() -> Step) -> io::Result<()> {
        #[cfg(test)]
        if let Some(plan) = &self.faults {
            return plan.on(step());
        }
        Ok(())
    }

    /// Creates `path`, which must not exist.
    pub(crate) fn create_new(&self, path: &Path) -> Result<File> {
        self.create_new_mode(path, 0o666)
    }

    /// Creates `path`, which must not exist, with permission bits `mode` (less the umask).
    pub(crate) fn create_new_mode(&self, path: &Path, mode: u32) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        self.step(|| Step::Create(path.to_path_buf())).at("create", path)?;
        OpenOptions::new().write(true).create_new(true).mode(mode).open(path).at("create", path)
    }

    /// Writes `data` to the new file `path` and fsyncs it; on failure nothing is left at `path`.
    pub(crate) fn write_new(&self, path: &Path, data: &[u8]) -> Result<()> {
        let mut file = self.create_new(path)?;
        let result = self.write_and_sync(&mut file, path, data);
        if result.is_err() {
            let _ = self.remove_if_exists(path);
        }
        result
    }

    /// Writes all of `data` to `file` (at `path`) and fsyncs it.
    fn write_and_sync(&self, file: &mut File, path: &Path, data: &[u8]) -> Result<()> {
        self.step(|| Step::Write(path.to_path_buf())).at("write", path)?;
        file.write_all(data).at("write", path)?;
        self.sync(file, path)
    }

    /// Renames `from` to `to` (replacing `to`); the caller fsyncs the directory.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.step(|| Step::Rename(from.to_path_buf(), to.to_path_buf())).at("rename", to)?;
        fs::rename(from, to).at("rename", to)
    }

    /// fsyncs a file's data and metadata.
    pub(crate) fn sync(&self, file: &File, path: &Path) -> Result<()> {
        self.step(|| Step::Fsync(path.to_path_buf())).at("fsync", path)?;
        file.sync_all().at("fsync", path)
    }

    /// fdatasyncs a file: its data and what reading it back needs (its size), not the rest of its
    /// metadata (a file another program wrote, about to be linked: the link's directory is
    /// fsynced after).
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        self.step(|| Step::Fsync(path.to_path_buf())).at("fdatasync", path)?;
        file.sync_data().at("fdatasync", path)
    }

    /// Makes `files` durable (data and metadata) with one flush of the filesystem holding them
    /// (`syncfs`, which flushes everything else written there too), where an fsync each would
    /// cost a journal commit each. The files must all be on one filesystem. One step per file.
    pub(crate) fn sync_files(&self, files: &[&Path]) -> Result<()> {
        let Some(first) = files.first() else { return Ok(()) };
        for f in files {
            self.step(|| Step::Fsync(f.to_path_buf())).at("syncfs", f)?;
        }
        let file = File::open(first).at("syncfs", first)?;
        nix::unistd::syncfs(&file).map_err(io::Error::from).at("syncfs", first)
    }

    /// fsyncs a directory (makes renames, links and creations inside it durable).
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.step(|| Step::FsyncDir(dir.to_path_buf())).at("fsync directory", dir)?;
        File::open(dir).and_then(|d| d.sync_all()).at("fsync directory", dir)
    }

    /// `mkdir -p` that fsyncs the parent of every directory it creates.
    pub(crate) fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent)?;
        }
        self.step(|| Step::Mkdir(dir.to_path_buf())).at("create directory", dir)?;
        match fs::create_dir(dir) {
            Ok(()) => match dir.parent() {
                Some(parent) => self.sync_dir(parent),
                None => Ok(()),
            },
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(e).at("create directory", dir),
        }
    }

    /// Replaces `path` atomically with `data`: temporary file in the same directory, fsync,
    /// rename, fsync of the directory. Readers see the old or the new content, never a mix.
    pub(crate) fn replace(&self, path: &Path, data: &[u8]) -> Result<()> {
        replace_file(self, path, data, 0o644)
    }

    /// Hardlinks `src` to `dst` unless `dst` exists already (both name the same complete content,
    /// because only verified files are ever linked). Returns whether a link was made. The caller
    /// fsyncs `dst`'s directory.
    pub(crate) fn link_if_absent(&self, src: &Path, dst: &Path) -> Result<bool> {
        if dst.exists() {
            return Ok(false);
        }
        self.step(|| Step::Link(src.to_path_buf(), dst.to_path_buf())).at("link", dst)?;
        match fs::hard_link(src, dst) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).at("link", dst),
        }
    }

    /// Removes a file; a file that is already gone is not an error.
    pub(crate) fn remove_if_exists(&self, path: &Path) -> Result<()> {
        self.step(|| Step::Unlink(path.to_path_buf())).at("remove", path)?;
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).at("remove", path),
            _ => Ok(()),
        }
    }

    /// Makes a file read-only (blobs are immutable).
    pub(crate) fn make_read_only(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.step(|| Step::Chmod(path.to_path_buf())).at("chmod", path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o444)).at("chmod", path)
    }

    /// Makes a file writable by its owner again (an upload file that a crash left read-only).
    pub(crate) fn make_writable(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.step(|| Step::Chmod(path.to_path_buf())).at("chmod", path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).at("chmod", path)
    }

    /// Cuts the file at `path` back to `len` bytes.
    pub(crate) fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        self.step(|| Step::Truncate(path.to_path_buf())).at("truncate", path)?;
        OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)).at("truncate", path)
    }

    /// Commits a redb write transaction (the step that makes metadata changes visible).
    /// An I/O failure of the commit is an `Io` error (its kind tells a full disk), and latches
    /// the database handle until it is reopened (see `database`).
    pub(crate) fn commit(&self, txn: WriteTxn) -> Result<()> {
        self.step(|| Step::Commit).at("commit metadata", Path::new(""))?;
        match txn.commit() {
            Err(redb::CommitError::Storage(redb::StorageError::Io(e))) => Err(e).at("commit metadata", Path::new("")),
            other => Ok(other?),
        }
    }
}

/// Replaces `path` atomically with `data` (temporary file beside it created with `mode`, fsync,
/// rename, fsync of the directory); the temporary file is removed on failure. The one
/// atomic-replace of the project: the store's `index.json`/`oci-layout` and the htpasswd file
/// written by `pier htpasswd` both go through it.
pub(crate) fn replace_file(disk: &Disk, path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut file = disk.create_new_mode(&tmp, mode)?;
    let result = disk.write_and_sync(&mut file, &tmp, data).and_then(|()| disk.rename(&tmp, path));
    if result.is_err() {
        let _ = disk.remove_if_exists(&tmp);
    }
    result?;
    disk.sync_dir(dir)
}

/// Replaces `path` atomically with `data`, for callers outside the store (file mode `mode`).
pub fn write_file_atomically(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace_file(&Disk::default(), path, data, mode)
}

#[cfg(test)]
pub(crate) mod faults {
    //! A plan of what goes wrong, for the deterministic crash tests.

    use std::io;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::Step;

    /// What happens at the chosen step.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Fault {
        /// The step fails with this OS error (e.g. EIO, ENOSPC); later steps run normally.
        Error(i32),
        /// The process "dies" before the step: it and every later step fail, nothing runs.
        Crash,
    }

    /// Once armed, counts steps, records them, and fails the `fail_at`-th (1-based; 0 = never).
    pub(crate) struct FaultPlan {
        armed: AtomicBool,
        fail_at: usize,
        fault: Fault,
        taken: AtomicUsize,
        crashed: AtomicBool,
        trace: Mutex<Vec<Step>>,
    }

    impl FaultPlan {
        pub(crate) fn new(fail_at: usize, fault: Fault) -> FaultPlan {
            FaultPlan {
                armed: AtomicBool::new(false),
                fail_at,
                fault,
                taken: AtomicUsize::new(0),
                crashed: AtomicBool::new(false),
                trace: Mutex::new(Vec::new()),
            }
        }

        /// A plan that fails nothing and only records.
        pub(crate) fn record() -> FaultPlan {
            FaultPlan::new(0, Fault::Crash)
        }

        /// Starts counting (steps before this, e.g. a test's setup, pass untouched).
        pub(crate) fn arm(&self) {
            self.armed.store(true, Ordering::SeqCst);
        }

        pub(crate) fn on(&self, step: Step) -> io::Result<()> {
            if !self.armed.load(Ordering::SeqCst) {
                return Ok(());
            }
            if self.crashed.load(Ordering::SeqCst) {
                return Err(io::Error::other("simulated crash: the process is gone"));
            }
            let n = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
            self.trace.lock().unwrap_or_else(|p| p.into_inner()).push(step);
            if n != self.fail_at {
                return Ok(());
            }
            match self.fault {
                Fault::Error(code) => Err(io::Error::from_raw_os_error(code)),
                Fault::Crash => {
                    self.crashed.store(true, Ordering::SeqCst);
                    Err(io::Error::other("simulated crash: the process is gone"))
                }
            }
        }

        /// Steps announced so far (including the failed one).
        pub(crate) fn steps(&self) -> usize {
            self.taken.load(Ordering::SeqCst)
        }

        pub(crate) fn trace(&self) -> Vec<Step> {
            self.trace.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        pub(crate) fn crashed(&self) -> bool {
            self.crashed.load(Ordering::SeqCst)
        }
    }
}
