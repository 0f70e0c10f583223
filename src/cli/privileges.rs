//! Dropping root before serving: what lets pier's container image start on a data volume that
//! the host created owned by root (a bind mount such as `./data:/var/lib/registry`, which the
//! engine creates as root when it is missing) while pier itself never serves as root.
//!
//! `pier serve` started as root (euid 0) with `PIER_RUN_AS=UID:GID` in its environment (the
//! image sets it) takes the data directory for that user, then gives up root for good:
//! 1. creates the data directory if it is missing;
//! 2. if the directory itself is not owned by `UID:GID`, changes the owner of every entry below
//!    it that is not (symbolic links themselves, never their targets; other file systems
//!    mounted inside are left alone), then of the directory last. The directory's owner is the
//!    marker: once it is right the walk is not repeated, so a start does not grow with the
//!    store, and a walk cut short (a crash) is redone in full at the next start;
//! 3. `setgroups([GID])`, `setgid(GID)`, `setuid(UID)`, and checks that root cannot be regained.
//!
//! Without the variable, or when not started as root (`docker run --user 1000`, a systemd unit
//! with `User=`), nothing happens. Everything pier opens later (the store, the htpasswd file,
//! TLS keys) is opened as `UID:GID`. A value that is not two non-zero numbers is an error:
//! pier refuses to start rather than serve as root by mistake.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{getegid, geteuid, setgid, setgroups, setuid, Gid, Uid};

/// The environment variable naming the user and group to serve as when started as root.
pub const RUN_AS_ENV: &str = "PIER_RUN_AS";

/// Why root could not be given up; `pier serve` logs it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{RUN_AS_ENV}={value:?}: expected UID:GID, two numbers other than 0 (e.g. 65532:65532)")]
    InvalidRunAs { value: String },
    #[error("cannot create the data directory {}", path.display())]
    CreateRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {} while handing the data directory to {uid}:{gid}", path.display())]
    Walk {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot change the owner of {} to {uid}:{gid}", path.display())]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot switch to {uid}:{gid}: {step} failed")]
    Switch {
        step: &'static str,
        uid: u32,
        gid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("still able to become root again after switching to {uid}:{gid}")]
    RootRegained { uid: u32, gid: u32 },
}

impl PrivilegeError {
    /// The message followed by each cause's (`...: Operation not permitted (os error 1)`).
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// What [`drop_root`] did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No `PIER_RUN_AS`, or not started as root: nothing changed.
    Unchanged,
    /// Now running as `uid:gid`; `chowned` entries of the data directory changed owner.
    Dropped { uid: u32, gid: u32, chowned: u64 },
}

/// Gives up root as `run_as` (the value of `PIER_RUN_AS`, if any) says, after handing `root`
/// (the data directory) to that user. See the module documentation.
pub fn drop_root(root: &Path, run_as: Option<&OsStr>) -> Result<Outcome, PrivilegeError> {
    let Some(value) = run_as.filter(|v| !v.is_empty()) else { return Ok(Outcome::Unchanged) };
    let (uid, gid) = parse_run_as(value)?;
    if !geteuid().is_root() {
        return Ok(Outcome::Unchanged);
    }
    std::fs::create_dir_all(root).map_err(|source| PrivilegeError::CreateRoot { path: root.to_path_buf(), source })?;
    let chowned = hand_over(root, uid, gid)?;
    let switch = |step, r: nix::Result<()>| r.map_err(|source| PrivilegeError::Switch { step, uid, gid, source });
    switch("setgroups", setgroups(&[Gid::from_raw(gid)]))?;
    switch("setgid", setgid(Gid::from_raw(gid)))?;
    switch("setuid", setuid(Uid::from_raw(uid)))?;
    if geteuid().as_raw() != uid || getegid().as_raw() != gid || setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::RootRegained { uid, gid });
    }
    Ok(Outcome::Dropped { uid, gid, chowned })
}

/// `UID:GID`, both decimal and non-zero.
fn parse_run_as(value: &OsStr) -> Result<(u32, u32), PrivilegeError> {
    let invalid = || PrivilegeError::InvalidRunAs { value: value.to_string_lossy().into_owned() };
    let text = value.to_str().ok_or_else(invalid)?;
    let (u, g) = text.split_once(':').ok_or_else(invalid)?;
    let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n != 0 && s.bytes().all(|b| b.is_ascii_digit()));
    match (number(u), number(g)) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(invalid()),
    }
}

/// Makes `uid:gid` the owner of `root` and of everything below it on the same file system,
/// unless `root` already is theirs (then nothing is looked at). `root` changes last. Returns
/// how many entries changed owner.
fn hand_over(root: &Path, uid: u32, gid: u32) -> Result<u64, PrivilegeError> {
    let walk_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrivilegeError::Walk { path, uid, gid, source }
    };
    let top = std::fs::metadata(root).map_err(walk_err(root))?;
    if top.uid() == uid && top.gid() == gid {
        return Ok(0);
    }
    let chown = |path: &Path| {
        lchown(path, Some(uid), Some(gid)).map_err(|source| PrivilegeError::Chown {
            path: path.to_path_buf(),
            uid,
            gid,
            source,
        })
    };
    let mut chowned = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(walk_err(&dir))? {
            let entry = entry.map_err(walk_err(&dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(walk_err(&path))?;
            if meta.dev() != top.dev() {
                continue;
            }
            if meta.uid() != uid || meta.gid() != gid {
                chown(&path)?;
                chowned += 1;
            }
            if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
    chown(root)?;
    Ok(chowned + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_is_two_nonzero_numbers() {
        assert_eq!(parse_run_as(OsStr::new("65532:65532")).ok(), Some((65532, 65532)));
        assert_eq!(parse_run_as(OsStr::new("1000:100")).ok(), Some((1000, 100)));
        for bad in ["0:0", "65532:0", "65532", "a:b", ":1", "1:", "+1:1", "1:2:3", " 1:1", "-1:1", "99999999999:1"] {
            assert!(parse_run_as(OsStr::new(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn nothing_happens_without_the_variable() {
        let dir = std::env::temp_dir().join("pier-privileges-never-created");
        assert_eq!(drop_root(&dir, None).ok(), Some(Outcome::Unchanged));
        assert_eq!(drop_root(&dir, Some(OsStr::new(""))).ok(), Some(Outcome::Unchanged));
        assert!(!dir.exists());
    }
}
