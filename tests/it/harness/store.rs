//! pier's data directory seen from the outside: checks that every blob file is complete and
//! named by its content, that repository layouts are consistent and that hardlink counts match
//! the repositories holding a blob; and where an upload's bytes are, so a test can wait for them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::image::{hex, read_layout};

/// All regular files (and symlinks) below `dir`, recursively, sorted; empty if `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Asserts nothing under `<root>/blobs/` is incomplete: every file is `blobs/sha256/<hex>` and its
/// content hashes to its name. Returns how many blobs were checked.
pub fn assert_store_blobs_complete(root: &Path) -> usize {
    let base = root.join("blobs");
    let files = files_under(&base);
    for f in &files {
        let rel = f.strip_prefix(&base).unwrap();
        let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        assert!(
            parts.len() == 2
                && parts[0] == "sha256"
                && parts[1].len() == 64
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
            "unexpected file under {}: {} (a temporary or partial file in the blob store?)",
            base.display(),
            rel.display()
        );
        assert_eq!(file_sha256(f), format!("sha256:{}", parts[1]), "blob file {} is incomplete/corrupt", f.display());
    }
    files.len()
}

/// The global blob file for a digest.
pub fn store_blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

pub fn nlink(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).nlink()
}

pub fn inode(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// The file holding the data of the upload at `location` (`/v2/<name>/blobs/uploads/<id>`).
pub fn upload_file(root: &Path, location: &str) -> PathBuf {
    let path = location.split('?').next().unwrap_or(location);
    let id = path.rsplit('/').next().unwrap_or_else(|| panic!("no upload id in {location:?}"));
    root.join("uploads").join(id)
}

/// How many bytes of the upload at `location` are on disk (0 if its file does not exist).
pub fn upload_bytes_on_disk(root: &Path, location: &str) -> u64 {
    std::fs::metadata(upload_file(root, location)).map(|m| m.len()).unwrap_or(0)
}

/// SHA-256 of a file, streamed through the `sha2` crate (built with optimisations even in test
/// builds: see `[profile.dev.package.sha2]`).
pub fn file_sha256(path: &Path) -> String {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// Checks a pier repository's on-disk OCI layout is self-consistent: every blob hashes to its
/// name, and every manifest named in index.json is present with the right size, together with
/// everything it references (config, layers, child manifests). Returns the tags.
pub fn assert_layout_consistent(dir: &Path) -> Vec<String> {
    let layout = read_layout(dir);
    let entries = layout.index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{}/index.json: {}", dir.display(), layout.index))
        .clone();
    let mut stack: Vec<Value> = entries;
    while let Some(desc) = stack.pop() {
        let d = desc["digest"].as_str().unwrap_or_else(|| panic!("descriptor without digest: {desc}"));
        let bytes =
            layout.blobs.get(d).unwrap_or_else(|| panic!("{}: {d} referenced but missing ({desc})", dir.display()));
        assert_eq!(desc["size"].as_u64(), Some(bytes.len() as u64), "{}: size of {d}", dir.display());
        let mt = desc["mediaType"].as_str().unwrap_or("");
        if mt.contains("manifest") || mt.contains("index") {
            let m: Value =
                serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{}: {d} is not JSON: {e}", dir.display()));
            if let Some(c) = m.get("config") {
                stack.push(c.clone());
            }
            for key in ["layers", "manifests"] {
                if let Some(a) = m[key].as_array() {
                    stack.extend(a.iter().cloned());
                }
            }
        }
    }
    layout.tags()
}

/// Checks the dedup invariant of pier's data directory: every blob in a repository layout
/// (`<root>/repositories/<name>/blobs/sha256/<hex>`) is a hardlink of the global blob
/// `<root>/blobs/sha256/<hex>`, and each global blob's link count is 1 + the number of
/// repositories holding it. Returns the number of repository blob links seen.
pub fn assert_store_links_consistent(root: &Path) -> usize {
    let mut per_global: BTreeMap<String, u64> = BTreeMap::new();
    let repos = root.join("repositories");
    let mut links = 0;
    for f in files_under(&repos) {
        let parent = f.parent().unwrap();
        if !(parent.ends_with("blobs/sha256")) {
            continue;
        }
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let global = root.join("blobs/sha256").join(&name);
        assert!(global.exists(), "{} has no global blob {}", f.display(), global.display());
        assert_eq!(inode(&f), inode(&global), "{} is not a hardlink of {}", f.display(), global.display());
        *per_global.entry(name).or_default() += 1;
        links += 1;
    }
    for f in files_under(&root.join("blobs")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let want = 1 + per_global.get(&name).copied().unwrap_or(0);
        assert_eq!(nlink(&f), want, "link count of {} (1 + repositories holding it)", f.display());
    }
    links
}
