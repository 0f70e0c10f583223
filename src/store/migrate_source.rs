//! Reading a data directory written by CNCF Distribution (`registry:2`, Debian's
//! `docker-registry`), as its filesystem driver lays it out under the root directory; only
//! reads, never a change (the files must stay usable by `registry:2`):
//!
//! ```text
//! <dir>/docker/registry/v2/
//!   blobs/<alg>/<first two hex digits>/<hex>/data            every blob and manifest, once
//!   repositories/<name>/                                     <name> may have several components
//!     _layers/<alg>/<hex>/link                               "<alg>:<hex>": the repository has the blob
//!     _manifests/revisions/<alg>/<hex>/link                  the repository has the manifest
//!     _manifests/tags/<tag>/current/link                     the tag names that manifest
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link           the tag's history (not imported)
//!     _uploads/<uuid>/{data,startedat,hashstates/...}        unfinished uploads (not imported)
//! ```
//!
//! Deletions in Distribution remove link files, not directories: a deleted manifest leaves
//! `revisions/<alg>/<hex>/` without its `link` (it stays deleted here: only a present link
//! counts), a deleted tag loses its whole `tags/<tag>/` directory (a manifest delete removes the
//! tags naming it). A directory under `repositories/` is a repository when it holds `_layers`,
//! `_manifests` or `_uploads`; the other subdirectories (not starting with `_`) are searched for
//! more repositories (`a` and `a/b` can both be repositories).
//!
//! Everything here is data a program wrote and a user may have edited: every link is parsed
//! (a bounded read, a digest that must name its own directory), and anything odd is an
//! [`Unreadable`] item with its reason, never a panic.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::core::{Algorithm, Digest};

/// Where Distribution's filesystem driver keeps everything, below its root directory.
const TREE: &str = "docker/registry/v2";
/// A link file holds one digest; anything longer is not a link.
const MAX_LINK_BYTES: u64 = 256;

/// A registry:2 tree (`<dir>/docker/registry/v2`).
#[derive(Clone, Debug)]
pub(crate) struct Registry2 {
    base: PathBuf,
}

/// Something of a repository that could not be read, and why.
#[derive(Clone, Debug)]
pub(crate) struct Unreadable {
    /// The digest, tag or file name concerned.
    pub what: String,
    pub why: String,
}

/// What a listing found, and what it could not read.
#[derive(Debug)]
pub(crate) struct Listed<T> {
    pub items: Vec<T>,
    pub unreadable: Vec<Unreadable>,
}

/// The manifest revisions of a repository.
#[derive(Debug, Default)]
pub(crate) struct Revisions {
    pub present: Vec<Digest>,
    /// Revisions whose link registry:2 removed (deleted manifests).
    pub deleted: u64,
    pub unreadable: Vec<Unreadable>,
}

/// What `_layers` or `_manifests/revisions` holds: the digests whose link is present, how many
/// have their link removed, what could not be read.
type Links = (Vec<Digest>, u64, Vec<Unreadable>);

impl Registry2 {
    /// The registry:2 tree under `dir`, if there is one.
    pub fn find(dir: &Path) -> Option<Registry2> {
        let base = dir.join(TREE);
        base.join("repositories").is_dir().then_some(Registry2 { base })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The `data` file of a blob.
    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.base.join("blobs").join(d.algorithm().name()).join(hex.get(..2).unwrap_or(hex)).join(hex).join("data")
    }

    /// Every repository, as its path below `repositories/` (components joined with `/`), sorted;
    /// directories whose name is not UTF-8 are returned as unreadable.
    pub fn repositories(&self) -> io::Result<Listed<String>> {
        let root = self.base.join("repositories");
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut is_repo = false;
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let name = entry.file_name();
                match name.to_str() {
                    Some("_layers" | "_manifests" | "_uploads") => is_repo = true,
                    Some(n) if n.starts_with('_') => {}
                    Some(_) => dirs.push(entry.path()),
                    None => unreadable.push(Unreadable {
                        what: entry.path().display().to_string(),
                        why: String::from("directory name is not UTF-8"),
                    }),
                }
            }
            if is_repo {
                if let Some(name) = dir.strip_prefix(&root).ok().and_then(Path::to_str) {
                    found.push(name.to_string());
                }
            }
        }
        found.sort();
        Ok(Listed { items: found, unreadable })
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.base.join("repositories").join(name)
    }

    /// The blobs the repository links (`_layers`): layers and configs.
    pub fn layers(&self, repo: &str) -> io::Result<Listed<Digest>> {
        let (items, _deleted, unreadable) = links_below(&self.repo(repo).join("_layers"))?;
        Ok(Listed { items, unreadable })
    }

    /// The manifest revisions of the repository.
    pub fn revisions(&self, repo: &str) -> io::Result<Revisions> {
        let (present, deleted, unreadable) = links_below(&self.repo(repo).join("_manifests").join("revisions"))?;
        Ok(Revisions { present, deleted, unreadable })
    }

    /// The tags of the repository and the manifest each names (`current/link`), sorted by tag.
    /// A tag directory without a readable current link is unreadable.
    pub fn tags(&self, repo: &str) -> io::Result<Listed<(String, Digest)>> {
        let dir = self.repo(repo).join("_manifests").join("tags");
        let mut tags = Vec::new();
        let mut unreadable = Vec::new();
        for entry in read_dir_if_exists(&dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let Some(tag) = entry.file_name().to_str().map(str::to_string) else {
                unreadable.push(Unreadable {
                    what: entry.path().display().to_string(),
                    why: String::from("tag name is not UTF-8"),
                });
                continue;
            };
            match read_link(&entry.path().join("current").join("link")) {
                Ok(Some(d)) => tags.push((tag, d)),
                Ok(None) => unreadable.push(Unreadable { what: tag, why: String::from("no current/link") }),
                Err(why) => unreadable.push(Unreadable { what: tag, why }),
            }
        }
        tags.sort();
        Ok(Listed { items: tags, unreadable })
    }

    /// How many unfinished uploads the repository has (`_uploads/<id>/`).
    pub fn unfinished_uploads(&self, repo: &str) -> io::Result<u64> {
        let mut n = 0;
        for entry in read_dir_if_exists(&self.repo(repo).join("_uploads"))? {
            if entry?.file_type()?.is_dir() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// `read_dir` that sees a missing directory as an empty one.
fn read_dir_if_exists(dir: &Path) -> io::Result<impl Iterator<Item = io::Result<fs::DirEntry>>> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => Some(rd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(entries.into_iter().flatten())
}

/// The `<alg>/<hex>/link` files below `dir`: the digests whose link is present and names its
/// own directory, how many directories have no link (deleted), and what could not be read.
fn links_below(dir: &Path) -> io::Result<Links> {
    let mut present = Vec::new();
    let mut deleted = 0;
    let mut unreadable = Vec::new();
    for alg_entry in read_dir_if_exists(dir)? {
        let alg_entry = alg_entry?;
        if !alg_entry.file_type()?.is_dir() {
            continue;
        }
        let alg_name = alg_entry.file_name().to_string_lossy().into_owned();
        let Ok(algorithm) = Algorithm::from_name(&alg_name) else {
            unreadable.push(Unreadable {
                what: alg_entry.path().display().to_string(),
                why: format!("digest algorithm {alg_name:?} is not supported"),
            });
            continue;
        };
        for entry in fs::read_dir(alg_entry.path())? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let named = format!("{}:{}", algorithm.name(), entry.file_name().to_string_lossy());
            let Ok(digest) = Digest::parse(&named) else {
                unreadable.push(Unreadable { what: named, why: String::from("not a digest") });
                continue;
            };
            match read_link(&entry.path().join("link")) {
                Ok(None) => deleted += 1,
                Ok(Some(linked)) if linked == digest => present.push(digest),
                Ok(Some(linked)) => {
                    unreadable.push(Unreadable { what: named, why: format!("its link names {linked}") })
                }
                Err(why) => unreadable.push(Unreadable { what: named, why }),
            }
        }
    }
    present.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok((present, deleted, unreadable))
}

/// Reads a link file: `Ok(None)` when it does not exist, `Err(why)` when it is not one digest.
fn read_link(path: &Path) -> Result<Option<Digest>, String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_LINK_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_LINK_BYTES {
        return Err(format!("{} is not a link (too long)", path.display()));
    }
    Digest::parse(text.trim()).map(Some).map_err(|e| format!("{} holds no digest: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_repositories_links_tags_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let repos = dir.path().join(TREE).join("repositories");
        let hex = |c: char| c.to_string().repeat(64);
        write(&repos.join("a/_layers/sha256").join(hex('1')).join("link"), &d('1'));
        write(&repos.join("a/_layers/sha256").join(hex('2')).join("link"), &d('3'));
        write(&repos.join("a/_manifests/revisions/sha256").join(hex('4')).join("link"), &d('4'));
        fs::create_dir_all(repos.join("a/_manifests/revisions/sha256").join(hex('5'))).unwrap();
        write(&repos.join("a/_manifests/tags/v1/current/link"), &d('4'));
        write(&repos.join("a/_manifests/tags/v2/current/link"), "garbage");
        fs::create_dir_all(repos.join("a/b/c/_uploads/some-id")).unwrap();
        fs::create_dir_all(repos.join("nothing/here")).unwrap();
        let r = Registry2::find(dir.path()).unwrap();
        assert_eq!(r.repositories().unwrap().items, vec!["a".to_string(), "a/b/c".to_string()]);
        let layers = r.layers("a").unwrap();
        assert_eq!(layers.items, vec![Digest::parse(&d('1')).unwrap()]);
        assert_eq!(layers.unreadable.len(), 1, "a link naming another digest: {layers:?}");
        let revs = r.revisions("a").unwrap();
        assert_eq!((revs.present.len(), revs.deleted), (1, 1));
        let tags = r.tags("a").unwrap();
        assert_eq!(tags.items, vec![("v1".to_string(), Digest::parse(&d('4')).unwrap())]);
        assert_eq!(tags.unreadable[0].what, "v2");
        assert_eq!(r.unfinished_uploads("a/b/c").unwrap(), 1);
        assert_eq!(r.unfinished_uploads("a").unwrap(), 0);
        let blob = r.blob_data(&Digest::parse(&d('1')).unwrap());
        assert!(blob.ends_with(format!("blobs/sha256/11/{}/data", hex('1'))), "{}", blob.display());
        assert!(Registry2::find(&dir.path().join("elsewhere")).is_none());
    }
}
