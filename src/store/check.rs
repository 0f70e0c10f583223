//! `Store::check`: verifies the invariants of `store::meta` against the files, read-only.
//!
//! Run it on a quiescent store (right after [`Store::open`], or while nothing writes): it reads
//! the tables in one snapshot, and each repository's expected `index.json` in a later one.
//! A repository marked in `INDEX_DIRTY` may have a lagging `index.json` (that is what the mark
//! says); an unmarked one whose `index.json` differs from its metadata is broken. The
//! deterministic crash tests run it after every simulated crash; a future `pier scrub` is its
//! natural user.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;

use redb::ReadableTable;

use super::error::{IoContext, Result};
use super::meta::{
    ManifestRecord, BLOBS, INDEX_DIRTY, MANIFESTS, MANIFEST_TAGS, QUARANTINE, REFERRERS, REPOS, REPO_BLOBS, REPO_BYTES,
    TAGS, UPLOADS,
};
use super::recovery::stray_index_files;
use super::Store;
use crate::core::{Algorithm, Digest, RepoName};

/// One finding of [`Store::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An invariant is violated: metadata points at something missing or wrong.
    Broken(String),
    /// A file that nothing references (what a crash or a failed operation leaves; harmless,
    /// removed by the next start-up sweep).
    Garbage(String),
}

impl Problem {
    pub fn is_broken(&self) -> bool {
        matches!(self, Problem::Broken(_))
    }
}

/// Collects findings; `broken!`/`garbage!` format them.
#[derive(Default)]
struct Findings(Vec<Problem>);

impl Findings {
    fn push(&mut self, what: String) {
        self.0.push(Problem::Broken(what));
    }
    fn garbage(&mut self, what: String) {
        self.0.push(Problem::Garbage(what));
    }
}

impl Store {
    /// Every violated invariant and every unreferenced file (empty when the store is consistent
    /// and clean). With `verify_content`, every blob is also re-hashed against its digest.
    pub fn check(&self, verify_content: bool) -> Result<Vec<Problem>> {
        let mut problems = Findings::default();
        let txn = self.db.begin_read()?;
        let repos: BTreeSet<String> = txn
            .open_table(REPOS)?
            .iter()?
            .map(|e| e.map(|(k, _)| k.value().to_string()))
            .collect::<std::result::Result<_, _>>()?;
        let quarantine: BTreeSet<String> = txn
            .open_table(QUARANTINE)?
            .iter()?
            .map(|e| e.map(|(k, _)| k.value().to_string()))
            .collect::<std::result::Result<_, _>>()?;
        // REPO_BLOBS: both files complete, one inode; BLOBS counts in step.
        let mut links_per_blob: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut repo_links: BTreeSet<(String, String)> = BTreeSet::new();
        for e in txn.open_table(REPO_BLOBS)?.iter()? {
            let (k, v) = e?;
            let (repo, digest) = k.value();
            let size = v.value();
            repo_links.insert((repo.to_string(), digest.to_string()));
            let entry = links_per_blob.entry(digest.to_string()).or_insert((size, 0));
            entry.1 += 1;
            if !repos.contains(repo) {
                problems.push(format!("REPO_BLOBS[{repo}, {digest}] but REPOS has no {repo}"));
            }
            let (Ok(r), Ok(d)) = (RepoName::parse(repo), Digest::parse(digest)) else {
                problems.push(format!("REPO_BLOBS[{repo}, {digest}] is not a valid name and digest"));
                continue;
            };
            if quarantine.contains(digest) {
                // Out of service (`store::scrub`): its files are gone or going on purpose.
                continue;
            }
            let global = self.paths.blob(&d);
            let linked = self.paths.repo_blob(&r, &d);
            match (fs::metadata(&global), fs::metadata(&linked)) {
                (Ok(g), Ok(l)) => {
                    if g.len() != size {
                        problems.push(format!("{digest}: file has {} bytes, metadata says {size}", g.len()));
                    }
                    if (g.dev(), g.ino()) != (l.dev(), l.ino()) {
                        problems.push(format!("{repo}: link of {digest} is not the global file"));
                    }
                    if verify_content {
                        match fs::read(&global) {
                            Ok(bytes) if Digest::of(d.algorithm(), &bytes) == d => {}
                            Ok(_) => problems.push(format!("{digest}: content does not match its digest")),
                            Err(e) => problems.push(format!("{digest}: cannot read: {e}")),
                        }
                    }
                }
                (g, l) => problems.push(format!(
                    "REPO_BLOBS[{repo}, {digest}] without its files (global: {}, link: {})",
                    g.is_ok(),
                    l.is_ok()
                )),
            }
        }
        // REPO_BYTES: each repository's usage is the sum of its links.
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for e in txn.open_table(REPO_BLOBS)?.iter()? {
            let (k, v) = e?;
            *sums.entry(k.value().0.to_string()).or_default() += v.value();
        }
        for e in txn.open_table(REPO_BYTES)?.iter()? {
            let (k, v) = e?;
            let expected = sums.remove(k.value()).unwrap_or(0);
            if v.value() != expected {
                problems.push(format!("REPO_BYTES[{}] = {} but its links sum to {expected}", k.value(), v.value()));
            }
        }
        for (repo, sum) in sums {
            problems.push(format!("{repo} links {sum} bytes but has no REPO_BYTES row"));
        }
        let blobs = txn.open_table(BLOBS)?;
        let mut recorded: BTreeSet<String> = BTreeSet::new();
        for e in blobs.iter()? {
            let (k, v) = e?;
            let (size, count) = v.value();
            recorded.insert(k.value().to_string());
            match links_per_blob.get(k.value()) {
                Some(&(s, n)) if (s, n) == (size, count) => {}
                found => problems.push(format!("BLOBS[{}] = ({size}, {count}) but links say {found:?}", k.value())),
            }
        }
        for d in links_per_blob.keys().filter(|d| !recorded.contains(*d)) {
            problems.push(format!("{d} is linked but has no BLOBS record"));
        }
        // MANIFESTS, TAGS, REFERRERS.
        let mut manifests: BTreeMap<(String, String), ManifestRecord> = BTreeMap::new();
        for e in txn.open_table(MANIFESTS)?.iter()? {
            let (k, v) = e?;
            let (repo, digest) = k.value();
            let key = (repo.to_string(), digest.to_string());
            if !repo_links.contains(&key) {
                problems.push(format!("MANIFESTS[{repo}, {digest}] without REPO_BLOBS"));
            }
            match ManifestRecord::decode(v.value()) {
                Some(record) => {
                    manifests.insert(key, record);
                }
                None => problems.push(format!("MANIFESTS[{repo}, {digest}] does not decode")),
            }
        }
        let mut tags: BTreeSet<(String, String, String)> = BTreeSet::new();
        for e in txn.open_table(TAGS)?.iter()? {
            let (k, v) = e?;
            let (repo, tag) = k.value();
            if !manifests.contains_key(&(repo.to_string(), v.value().to_string())) {
                problems.push(format!("TAGS[{repo}, {tag}] -> {} which is not a manifest of {repo}", v.value()));
            }
            tags.insert((repo.to_string(), v.value().to_string(), tag.to_string()));
        }
        let mut by_manifest: BTreeSet<(String, String, String)> = BTreeSet::new();
        for e in txn.open_table(MANIFEST_TAGS)?.iter()? {
            let (k, _) = e?;
            let (repo, digest, tag) = k.value();
            by_manifest.insert((repo.to_string(), digest.to_string(), tag.to_string()));
        }
        for (repo, digest, tag) in tags.symmetric_difference(&by_manifest) {
            problems.push(format!("TAGS and MANIFEST_TAGS disagree on ({repo}, {tag}) -> {digest}"));
        }
        for e in txn.open_table(REFERRERS)?.iter()? {
            let (k, _) = e?;
            let (repo, subject, referrer) = k.value();
            match manifests.get(&(repo.to_string(), referrer.to_string())) {
                Some(m) if m.subject.as_deref() == Some(subject) => {}
                _ => problems.push(format!("REFERRERS[{repo}, {subject}, {referrer}] without that manifest")),
            }
        }
        // UPLOADS ⇔ files.
        let mut uploads: BTreeSet<String> = BTreeSet::new();
        for e in txn.open_table(UPLOADS)?.iter()? {
            let (k, _) = e?;
            uploads.insert(k.value().to_string());
            if !self.paths.upload(k.value()).is_file() {
                problems.push(format!("UPLOADS[{}] without its file", k.value()));
            }
        }
        if let Ok(rd) = fs::read_dir(self.paths.uploads()) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !uploads.contains(&name) {
                    problems.garbage(format!("uploads/{name} has no session record"));
                }
            }
        }
        // No file that metadata does not reference.
        let mut on_disk = self.repos_on_disk().at("list", &self.paths.repositories())?;
        on_disk.extend(repos.iter().cloned());
        for alg in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
            if let Ok(rd) = fs::read_dir(self.paths.blob_dir(alg)) {
                for entry in rd.flatten() {
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    if !links_per_blob.contains_key(&digest) {
                        problems.garbage(format!("blobs/{digest} is not linked by any repository"));
                    }
                }
            }
            for repo in &on_disk {
                let Ok(r) = RepoName::parse(repo) else { continue };
                let Ok(rd) = fs::read_dir(self.paths.repo_blob_dir(&r, alg)) else { continue };
                for entry in rd.flatten() {
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    if !repo_links.contains(&(repo.clone(), digest.clone())) {
                        problems.garbage(format!("{repo} has a file for {digest} that metadata does not know"));
                    }
                }
            }
        }
        // index.json says what the metadata says, unless the repository is marked (its rewrite
        // is due: a lagging index.json is then expected, see `store::index`).
        let mut marked: BTreeSet<String> = BTreeSet::new();
        for e in txn.open_table(INDEX_DIRTY)?.iter()? {
            let name = e?.0.value().to_string();
            if !repos.contains(&name) {
                problems.push(format!("INDEX_DIRTY[{name}] but REPOS has no {name}"));
            }
            marked.insert(name);
        }
        drop(txn);
        for repo in &on_disk {
            let Ok(r) = RepoName::parse(repo) else { continue };
            for tmp in stray_index_files(&self.paths.repo(&r)) {
                problems.garbage(format!("{} is left from an interrupted write", tmp.display()));
            }
        }
        for repo in &repos {
            let Ok(r) = RepoName::parse(repo) else { continue };
            let found = match fs::read(self.paths.index(&r)) {
                Ok(found) => found,
                Err(e) => {
                    problems.push(format!("{repo}: index.json: {e}"));
                    continue;
                }
            };
            if marked.contains(repo) {
                if serde_json::from_slice::<serde_json::Value>(&found).is_err() {
                    problems.push(format!("{repo}: index.json (due for a rewrite) is not JSON"));
                }
            } else if found != self.render_index(&r)? {
                problems.push(format!("{repo}: index.json differs from the metadata and no rewrite is due"));
            }
        }
        Ok(problems.0)
    }
}
