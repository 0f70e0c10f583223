//! A small ext4 filesystem of its own, for tests of what pier does when the disk fills up: an
//! image file (`truncate`), `mkfs.ext4` (no blocks reserved for root, so the space pier sees as
//! free is the space there is: pier and the tests run as root), mounted with `mount -o loop` on
//! a temporary directory. Dropping it unmounts it (the loop device is detached with it), even
//! when the test failed; drop the `Pier` using it first (locals drop in reverse order: declare
//! the `LoopFs` before the `Pier`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::command::run;

pub struct LoopFs {
    mount: PathBuf,
    /// Holds the image file and the mount point.
    _dir: tempfile::TempDir,
}

impl LoopFs {
    /// A fresh ext4 of `size_mib` MiB, mounted.
    pub fn new(size_mib: u64) -> LoopFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("truncate").arg("-s").arg(format!("{size_mib}M")).arg(&image));
        run(Command::new("mkfs.ext4").args(["-F", "-q", "-m", "0"]).arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        LoopFs { mount, _dir: dir }
    }

    /// The mounted filesystem's root.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Bytes available to unprivileged users (`df`'s "Avail").
    pub fn free(&self) -> u64 {
        let out = run(Command::new("stat").args(["-f", "-c", "%a %S"]).arg(&self.mount));
        let mut it = out.split_whitespace().map(|n| n.parse::<u64>().expect("stat -f output"));
        it.next().unwrap() * it.next().unwrap()
    }

    /// Writes a file of zeros at `name` until the filesystem is full (ENOSPC); returns its size.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let path = self.mount.join(name);
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let block = vec![0u8; 4096];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Delayed allocation can report ENOSPC only now.
        let _ = f.sync_all();
        written
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // A process may still be letting go of its files: retry, then detach lazily.
        for _ in 0..50 {
            if Command::new("umount").arg(&self.mount).status().is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
