//! `pier import`'s work in the store: [`import`] reads one **plain tar stream** (a pier
//! bundle, an OCI archive or layout as a tar, a `docker save` archive; decompression and
//! volumes are the command's business) and commits the images it holds.
//!
//! Two phases, so that nothing of an import is visible before all of it was read and verified:
//!
//! 1. **Reading** (`Received`): the stream is read entry by entry (`tar_in`, which never
//!    unpacks anything: only regular files are read, by name, into files the store names
//!    itself). `blobs/<alg>/<hex>` is streamed into a staging file (`store::staging`) while it
//!    is hashed, and refused ([`ImportError::BlobCorrupt`]) unless its bytes hash to its name;
//!    a blob the store already has is read past, not staged. `pier-bundle.json`,
//!    `index.json` and `manifest.json` are read into memory (bounded). Other `*.tar` and
//!    `*.json` files (docker save's `<id>/layer.tar` and `<config>.json`, not
//!    content-addressed) are staged and named by what they hash to. Symbolic and hard links
//!    in the archive only alias names (docker save links a layer saved twice); devices,
//!    FIFOs and the like are skipped. A pier bundle's `pier-bundle.json` comes first: a delta
//!    whose `excluded` blobs the store lacks is refused ([`ImportError::DeltaBaseMissing`])
//!    before anything is staged.
//! 2. **Committing**, once the stream has ended with its end-of-archive block: the images are
//!    named (pier-bundle.json's list; index.json's annotations, see `archive_names`; docker
//!    save's `RepoTags`, for which an image manifest is made: Docker schema 2 whose config is
//!    the config file's bytes and whose layers are the layer tars as they are), renamed
//!    (`--repo`), and each is walked (indexes to their children, images to config and layers)
//!    so that every blob it needs is in the stream or the store ([`ImportError::Missing`]
//!    otherwise). Manifests of the stream that name a walked manifest as their `subject`
//!    (signatures, SBOMs) join their subject's repository: referrers stay with what they
//!    refer to. A repository the import would take past its quota refuses the whole import
//!    before anything is committed. Then, per repository, through the commit protocol of
//!    `store::migrate`: blobs
//!    (batches), manifests (children before indexes, subjects before referrers), tags last
//!    (moved if they named another manifest, as a push would).
//!
//! Invariants: memory does not grow with the stream or its blobs (one fixed buffer; maps of
//! digests and names); no path from the archive reaches the file system; staging files are
//! removed when the import ends, whatever the outcome, and a crash while reading leaves only
//! staging files, which the next start removes (`store::recovery`); a re-run reads past what
//! was committed. The commit is per repository and per item, each a transaction of its own (as
//! pushes are): a crash while committing leaves what an interrupted push leaves (a repository
//! with some of its blobs linked and no manifest naming them yet, or with the manifests but
//! not yet the tags), which the re-run completes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::archive_names::{self, ArchiveName};
use super::tar_in::{into_tar_error, EntryKind, TarError, TarReader};
use crate::core::bundle::{BundleManifest, BUNDLE_MANIFEST_PATH};
use crate::core::manifest::{Manifest, ManifestKind, DOCKER_MANIFEST, MAX_MANIFEST_BYTES};
use crate::core::{Algorithm, Digest, RepoName, Tag};
use crate::store::migrate::TagAdoption;
use crate::store::staging::{StageError, StagedFile};
use crate::store::{Store, StoreError};

/// The read buffer (one per import).
const BUFFER: usize = 1 << 20;
/// Largest `index.json` or docker `manifest.json` read (they list images, not blobs).
const MAX_INDEX_BYTES: u64 = 16 * 1024 * 1024;
/// Largest docker image config read (to check its `diff_ids`).
const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;
/// Blobs of a repository committed together.
const BATCH: usize = 256;
/// Media types of what an image made from a docker save archive points at.
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// How images are named in the store.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// `--repo NEW`: the repository of every image of a single-repository source, and of
    /// images the archive names by a tag only.
    pub repository: Option<RepoName>,
    /// `--repo OLD=NEW`: renames.
    pub renames: Vec<(String, RepoName)>,
}

/// The options of `--repo NAME` and `--repo OLD=NEW` (as `[OLD, NEW]`), names validated.
pub fn options(repository: Option<&str>, renames: &[[String; 2]]) -> Result<ImportOptions, String> {
    let parse =
        |name: &str| RepoName::parse(name).map_err(|e| format!("--repo: {name:?} is not a repository name: {e}"));
    Ok(ImportOptions {
        repository: repository.map(parse).transpose()?,
        renames: renames.iter().map(|[old, new]| Ok((old.clone(), parse(new)?))).collect::<Result<_, String>>()?,
    })
}

/// Why an import was refused or failed. Except for `Store` and `Refused` during the commit,
/// nothing of the import is visible when it returns one.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Tar(#[from] TarError),
    /// Neither `pier-bundle.json`, nor `index.json`, nor docker's `manifest.json`.
    #[error("not an image archive: no pier-bundle.json, index.json or manifest.json in it")]
    NotAnImageArchive,
    /// A metadata file of the archive is not what its format says.
    #[error("{file}: {why}")]
    Format { file: String, why: String },
    /// `blobs/<alg>/<hex>` whose bytes hash to something else.
    #[error("{name} is corrupt: its bytes hash to {actual}")]
    BlobCorrupt { name: String, actual: Digest },
    /// A delta whose base the store lacks.
    #[error(
        "this bundle is a delta: it leaves out {} blob(s) the store does not have (import the bundle it was made against first): {}",
        .missing.len(),
        .missing.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
    )]
    DeltaBaseMissing { missing: Vec<Digest> },
    /// A blob an image needs is neither in the archive nor in the store.
    #[error("{digest} ({needed_by}) is neither in the archive nor in the store")]
    Missing { digest: Digest, needed_by: String },
    /// A manifest of the archive that pier does not store.
    #[error("manifest {digest}: {why}")]
    BadManifest { digest: Digest, why: String },
    /// An image named by a tag only, or not named, and no `--repo` to put it in.
    #[error("{image} names no repository; give one with --repo NAME")]
    NoRepository { image: String },
    /// `--repo NAME` for an archive of several repositories.
    #[error("the archive holds several repositories ({}); --repo NAME needs one (use --repo OLD=NEW to rename)", .repositories.join(", "))]
    AmbiguousRepository { repositories: Vec<String> },
    /// `--repo OLD=NEW` for a repository the archive does not hold.
    #[error("--repo {repository}=…: the archive holds no repository {repository}")]
    RenameUnknown { repository: String },
    /// A repository or tag name pier refuses.
    #[error("{what} {name:?} is not a valid name: {why}")]
    InvalidName { what: &'static str, name: String, why: String },
    /// The store refused an item while committing (e.g. deleted meanwhile, quota).
    #[error("{repository}: {item}: {why}")]
    Refused { repository: String, item: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StageError> for ImportError {
    fn from(e: StageError) -> ImportError {
        match e {
            StageError::Input(io) => ImportError::Tar(into_tar_error(io)),
            StageError::Store(s) => ImportError::Store(s),
        }
    }
}

/// One image (a named reference) the import committed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportedImage {
    pub repository: String,
    /// `None`: an untagged reference (`repository@digest`).
    pub tag: Option<String>,
    pub digest: String,
    pub media_type: String,
    /// `set`, `present` (already there), `moved` (it named another manifest), or `untagged`.
    pub outcome: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImportReport {
    /// `pier bundle`, `OCI archive` or `docker save archive`.
    pub format: String,
    pub images: Vec<ImportedImage>,
    /// Manifests stored now (in some repository), and those the repositories had.
    pub manifests: u64,
    pub manifests_present: u64,
    /// Blobs (manifests included) of the stream that the images use: new to the store, and
    /// those it had already (read past, not staged). Files the images do not use are neither.
    pub blobs_imported: u64,
    pub blobs_skipped: u64,
    /// Bytes of the new blobs, and of the whole tar stream.
    pub bytes_imported: u64,
    pub bytes_read: u64,
    /// Referrers (signatures, SBOMs...) that came with their subjects.
    pub referrers: u64,
    pub seconds: f64,
}

impl ImportReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} image(s), {} manifest(s) stored ({} present), {} referrer(s); {} blob(s) imported ({} bytes), {} already in the store; {} bytes read in {:.1} s",
            self.format,
            self.images.len(),
            self.manifests,
            self.manifests_present,
            self.referrers,
            self.blobs_imported,
            self.bytes_imported,
            self.blobs_skipped,
            self.bytes_read,
            self.seconds
        )
    }
}

/// Where a blob of the stream is.
#[derive(Clone, Copy, Debug)]
enum Held {
    /// In a staging file (an index into `Received::files`).
    Staged(usize),
    /// The store had it: read past.
    InStore,
}

/// Everything the reading phase kept.
struct Received<'s> {
    store: &'s Store,
    bundle: Option<BundleManifest>,
    index_json: Option<Vec<u8>>,
    docker_manifest: Option<Vec<u8>>,
    /// Every blob of the stream, by digest, with its size.
    blobs: HashMap<Digest, (Held, u64)>,
    /// Regular files by (normalised) name: their digest.
    named: HashMap<String, Digest>,
    /// Symbolic and hard links: name → target name (normalised, inside the archive).
    links: HashMap<String, String>,
    /// The staging files; removed when this is dropped.
    files: Vec<StagedFile>,
}

impl Drop for Received<'_> {
    fn drop(&mut self) {
        for f in self.files.drain(..) {
            self.store.discard_staged(f);
        }
    }
}

impl Received<'_> {
    fn staged(&self, digest: &Digest) -> Option<&StagedFile> {
        match self.blobs.get(digest) {
            Some((Held::Staged(i), _)) => self.files.get(*i),
            _ => None,
        }
    }

    /// Whether the blob is in the stream or the store.
    fn available(&self, digest: &Digest) -> Result<bool, ImportError> {
        Ok(self.blobs.contains_key(digest) || self.store.has_blob(digest)?)
    }

    /// A blob's bytes, if it is at most `max` bytes, from its staging file or the store.
    fn small_blob(&self, digest: &Digest, max: usize) -> Result<Option<Vec<u8>>, ImportError> {
        if let Some(f) = self.staged(digest) {
            return Ok(self.store.read_staged(f, max)?);
        }
        Ok(self.store.stored_blob_at_most(digest, max)?)
    }

    /// The digest of the regular file `name`, following links (at most 16).
    fn resolve(&self, name: &str) -> Option<&Digest> {
        let mut name = normalise(name)?;
        for _ in 0..16 {
            if let Some(d) = self.named.get(&name) {
                return Some(d);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    /// Adds a staged file under its digest (a duplicate is discarded).
    fn keep(&mut self, file: StagedFile) -> Result<Digest, ImportError> {
        let digest = file.digest().clone();
        if self.blobs.contains_key(&digest) {
            self.store.discard_staged(file);
        } else if self.store.has_blob(&digest)? {
            let size = file.size();
            self.store.discard_staged(file);
            self.blobs.insert(digest.clone(), (Held::InStore, size));
        } else {
            self.blobs.insert(digest.clone(), (Held::Staged(self.files.len()), file.size()));
            self.files.push(file);
        }
        Ok(digest)
    }
}

/// Imports the images of the plain tar stream `reader` into `store` (see the module doc).
/// `progress` hears one message per reference committed (`imported REPO:TAG (DIGEST)`).
pub fn import(
    store: &Store,
    reader: impl Read,
    options: &ImportOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let mut report = ImportReport::default();
    let mut received = read_stream(store, reader, &mut report)?;
    let (format, roots) = name_images(&mut received)?;
    report.format = format.to_string();
    log::info!("import: {format}: {} reference(s) read and verified; committing", roots.len());
    let plans = plan(&received, roots, options)?;
    // What the images use of the stream: new to the store, or read past (a delta's excluded
    // blobs are in neither).
    let used: BTreeSet<&Digest> = plans.values().flat_map(|p| p.blobs.iter().chain(p.manifests.keys())).collect();
    for d in used {
        match received.blobs.get(d) {
            Some((Held::Staged(_), size)) => {
                report.blobs_imported += 1;
                report.bytes_imported += size;
            }
            Some((Held::InStore, _)) => report.blobs_skipped += 1,
            None => {}
        }
    }
    // A repository the import would take past its quota gets nothing (checked for all first).
    for (repo, plan) in &plans {
        let sizes: Vec<(&Digest, u64)> = plan
            .blobs
            .iter()
            .chain(plan.manifests.keys())
            .map(|d| (d, received.blobs.get(d).map_or(0, |b| b.1)))
            .collect();
        store.check_quota_for(repo, &sizes)?;
    }
    let files: Vec<&StagedFile> = received.files.iter().collect();
    store.sync_staged(&files)?;
    for (repo, plan) in &plans {
        commit(store, &received, repo, plan, &mut report, progress)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A tar entry's name inside the archive: `./` and empty components dropped, `..` resolved;
/// `None` for a name that leaves the archive or is not UTF-8. (Only ever a key: never a path.)
fn normalise(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `blobs/<alg>/<hex>` as a digest (`None` for any other name).
fn blob_name(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

fn read_stream<'s>(
    store: &'s Store,
    reader: impl Read,
    report: &mut ImportReport,
) -> Result<Received<'s>, ImportError> {
    let mut tar = TarReader::new(reader);
    let mut buf = vec![0u8; BUFFER];
    let mut r = Received {
        store,
        bundle: None,
        index_json: None,
        docker_manifest: None,
        blobs: HashMap::new(),
        named: HashMap::new(),
        links: HashMap::new(),
        files: Vec::new(),
    };
    while let Some(entry) = tar.next_entry()? {
        if matches!(entry.kind, EntryKind::Directory | EntryKind::Other(_)) {
            continue;
        }
        let Some(name) = std::str::from_utf8(&entry.path).ok().and_then(normalise) else {
            log::warn!(
                "import: entry {:?} skipped: not a name inside the archive",
                String::from_utf8_lossy(&entry.path)
            );
            continue;
        };
        match entry.kind {
            EntryKind::Regular => {}
            EntryKind::Symlink | EntryKind::Hardlink => {
                let target = String::from_utf8_lossy(&entry.link);
                // A symbolic link is relative to its directory; a hard link names an entry.
                let target = if entry.kind == EntryKind::Symlink && !target.starts_with('/') {
                    match name.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target.into_owned(),
                    }
                } else {
                    target.into_owned()
                };
                if let Some(target) = normalise(&target) {
                    r.links.insert(name, target);
                }
                continue;
            }
            EntryKind::Directory | EntryKind::Other(_) => continue,
        }
        if name == BUNDLE_MANIFEST_PATH {
            let bytes = read_small(&mut tar, &name, entry.size, crate::core::bundle::MAX_FORMAT_BYTES as u64)?;
            let bundle = BundleManifest::parse(&bytes)
                .map_err(|e| ImportError::Format { file: name.clone(), why: e.to_string() })?;
            let mut missing = Vec::new();
            for b in &bundle.excluded {
                if !store.has_blob(&b.digest)? {
                    missing.push(b.digest.clone());
                }
            }
            if !missing.is_empty() {
                return Err(ImportError::DeltaBaseMissing { missing });
            }
            r.bundle = Some(bundle);
        } else if name == "index.json" {
            r.index_json = Some(read_small(&mut tar, &name, entry.size, MAX_INDEX_BYTES)?);
        } else if name == "manifest.json" {
            r.docker_manifest = Some(read_small(&mut tar, &name, entry.size, MAX_INDEX_BYTES)?);
        } else if let Some(digest) = blob_name(&name) {
            if r.blobs.contains_key(&digest) || store.has_blob(&digest)? {
                // Read past (the next entry skips its data).
                r.blobs.entry(digest.clone()).or_insert((Held::InStore, entry.size));
            } else {
                let file = store.stage_stream(&mut tar.data(), entry.size, digest.algorithm(), &mut buf)?;
                if *file.digest() != digest {
                    let actual = file.digest().clone();
                    store.discard_staged(file);
                    return Err(ImportError::BlobCorrupt { name, actual });
                }
                r.keep(file)?;
            }
            r.named.insert(name, digest);
        } else if name.ends_with(".tar") || name.ends_with(".json") {
            // Not content-addressed (docker save): named by what it hashes to.
            let file = store.stage_stream(&mut tar.data(), entry.size, Algorithm::Sha256, &mut buf)?;
            let digest = r.keep(file)?;
            r.named.insert(name, digest);
        }
    }
    report.bytes_read = tar.position;
    report.bytes_read += tar.drain()?;
    Ok(r)
}

/// The data of the current entry, if at most `max` bytes.
fn read_small<R: Read>(tar: &mut TarReader<R>, name: &str, size: u64, max: u64) -> Result<Vec<u8>, ImportError> {
    if size > max {
        return Err(ImportError::Format { file: name.to_string(), why: format!("{size} bytes, more than {max}") });
    }
    let mut bytes = Vec::new();
    tar.data().read_to_end(&mut bytes).map_err(into_tar_error)?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Naming

/// A named reference of the archive, before `--repo`.
#[derive(Clone, Debug)]
struct Root {
    name: ArchiveName,
    digest: Digest,
}

/// The format and the references of the archive.
fn name_images(r: &mut Received) -> Result<(&'static str, Vec<Root>), ImportError> {
    if let Some(bundle) = &r.bundle {
        for b in &bundle.blobs {
            if !r.available(&b.digest)? {
                return Err(ImportError::Missing {
                    digest: b.digest.clone(),
                    needed_by: String::from("listed in pier-bundle.json"),
                });
            }
        }
        let roots = bundle
            .images
            .iter()
            .map(|i| Root {
                name: ArchiveName {
                    repository: Some(i.repository.as_str().to_string()),
                    tag: i.tag.as_ref().map(|t| t.as_str().to_string()),
                },
                digest: i.digest.clone(),
            })
            .collect();
        return Ok(("pier bundle", roots));
    }
    if let Some(index) = &r.index_json {
        return Ok(("OCI archive", oci_roots(index)?));
    }
    if r.docker_manifest.is_some() {
        return Ok(("docker save archive", docker_roots(r)?));
    }
    Err(ImportError::NotAnImageArchive)
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn oci_roots(index: &[u8]) -> Result<Vec<Root>, ImportError> {
    let bad = |why: String| ImportError::Format { file: String::from("index.json"), why };
    let index: OciIndex = serde_json::from_slice(index).map_err(|e| bad(e.to_string()))?;
    index
        .manifests
        .into_iter()
        .map(|d| {
            let digest = Digest::parse(&d.digest).map_err(|e| bad(format!("digest {:?}: {e}", d.digest)))?;
            Ok(Root { name: archive_names::from_annotations(&d.annotations), digest })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaTwo<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: SchemaTwoDescriptor<'a>,
    layers: Vec<SchemaTwoDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaTwoDescriptor<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a str,
}

#[derive(Deserialize)]
struct DockerConfig {
    rootfs: DockerRootfs,
}

#[derive(Deserialize)]
struct DockerRootfs {
    diff_ids: Vec<String>,
}

/// The images of a docker save archive: for each entry of `manifest.json`, a Docker schema 2
/// manifest over its config file and layer tars (checked against the config's `diff_ids`),
/// staged like any blob of the stream.
fn docker_roots(r: &mut Received) -> Result<Vec<Root>, ImportError> {
    let file = String::from("manifest.json");
    let bad = |why: String| ImportError::Format { file: file.clone(), why };
    let bytes = r.docker_manifest.as_deref().unwrap_or_default();
    let entries: Vec<DockerSaveEntry> = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut made: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
    for entry in entries {
        let missing = |path: &str| bad(format!("{path} is not a file of the archive"));
        let config = r.resolve(&entry.config).ok_or_else(|| missing(&entry.config))?.clone();
        let config_size = r.blobs.get(&config).map_or(0, |b| b.1);
        let config_bytes = r
            .small_blob(&config, MAX_CONFIG_BYTES)?
            .ok_or_else(|| bad(format!("{}: larger than {MAX_CONFIG_BYTES} bytes", entry.config)))?;
        let parsed: DockerConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("{}: {e}", entry.config)))?;
        if parsed.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(bad(format!(
                "{} lists {} layers, its config {} diff_ids",
                entry.config,
                entry.layers.len(),
                parsed.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let d = r.resolve(path).ok_or_else(|| missing(path))?.clone();
            if d.as_str() != diff_id {
                return Err(bad(format!("{path} hashes to {d}, its config says {diff_id} (a compressed layer?)")));
            }
            let size = r.blobs.get(&d).map_or(0, |b| b.1);
            layers.push((d, size));
        }
        let layer_descriptors = layers
            .iter()
            .map(|(d, size)| SchemaTwoDescriptor { media_type: DOCKER_LAYER_TAR, size: *size, digest: d.as_str() })
            .collect();
        let manifest = SchemaTwo {
            schema_version: 2,
            media_type: DOCKER_MANIFEST,
            config: SchemaTwoDescriptor { media_type: DOCKER_CONFIG, size: config_size, digest: config.as_str() },
            layers: layer_descriptors,
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| bad(e.to_string()))?;
        made.push((body, entry.repo_tags.unwrap_or_default()));
    }
    let mut roots = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (body, tags) in made {
        let staged = r.store.stage_stream(&mut body.as_slice(), body.len() as u64, Algorithm::Sha256, &mut buf)?;
        let digest = r.keep(staged)?;
        if tags.is_empty() {
            roots.push(Root { name: ArchiveName::default(), digest: digest.clone() });
        }
        for t in tags {
            roots.push(Root { name: archive_names::parse_reference(&t), digest: digest.clone() });
        }
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------------------
// Planning

/// What one repository gets.
#[derive(Default)]
struct RepoPlan {
    /// Configs and layers.
    blobs: BTreeSet<Digest>,
    /// Every manifest, parsed.
    manifests: BTreeMap<Digest, Manifest>,
    /// The named references: a tag, or `None` for `repository@digest`.
    refs: Vec<(Option<Tag>, Digest)>,
    /// Manifests that joined as referrers of another.
    referrers: u64,
}

/// Deepest nesting of indexes followed.
const MAX_DEPTH: usize = 8;

/// Walks the manifest `digest` into `plan`: it and, for an index, its children; every blob
/// must be in the stream or the store.
fn walk(r: &Received, plan: &mut RepoPlan, digest: &Digest, needed_by: &str, depth: usize) -> Result<(), ImportError> {
    if plan.manifests.contains_key(digest) {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(ImportError::BadManifest { digest: digest.clone(), why: String::from("indexes nested too deep") });
    }
    if !r.available(digest)? {
        return Err(ImportError::Missing { digest: digest.clone(), needed_by: needed_by.to_string() });
    }
    let manifest = read_manifest(r, digest)?
        .ok_or_else(|| ImportError::BadManifest { digest: digest.clone(), why: String::from("not a manifest") })?;
    for b in &manifest.blobs {
        if !r.available(&b.digest)? {
            return Err(ImportError::Missing { digest: b.digest.clone(), needed_by: format!("a blob of {digest}") });
        }
        plan.blobs.insert(b.digest.clone());
    }
    let children: Vec<Digest> = manifest.children.iter().map(|c| c.digest.clone()).collect();
    plan.manifests.insert(digest.clone(), manifest);
    for c in children {
        walk(r, plan, &c, &format!("a manifest of the index {digest}"), depth + 1)?;
    }
    Ok(())
}

/// The manifest `digest` of the stream (or the store), parsed; `Ok(None)` for a blob that is
/// not a manifest (too large, or not one pier stores: the error says why).
fn read_manifest(r: &Received, digest: &Digest) -> Result<Option<Manifest>, ImportError> {
    let Some(bytes) = r.small_blob(digest, MAX_MANIFEST_BYTES)? else { return Ok(None) };
    match Manifest::parse(None, &bytes) {
        Ok(m) => Ok(Some(m)),
        Err(e) => Err(ImportError::BadManifest { digest: digest.clone(), why: e.to_string() }),
    }
}

/// Whether `bytes` may be a manifest (a JSON object), before parsing them.
fn looks_like_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Repository plans for the named references, with their referrers.
fn plan(r: &Received, roots: Vec<Root>, options: &ImportOptions) -> Result<BTreeMap<RepoName, RepoPlan>, ImportError> {
    let sources: BTreeSet<String> = roots.iter().filter_map(|root| root.name.repository.clone()).collect();
    if options.repository.is_some() && sources.len() > 1 {
        return Err(ImportError::AmbiguousRepository { repositories: sources.into_iter().collect() });
    }
    for (old, _) in &options.renames {
        if !sources.contains(old) {
            return Err(ImportError::RenameUnknown { repository: old.clone() });
        }
    }
    let mut plans: BTreeMap<RepoName, RepoPlan> = BTreeMap::new();
    let mut unnamed: Vec<Digest> = Vec::new();
    for root in roots {
        let what = match (&root.name.repository, &root.name.tag) {
            (Some(repo), Some(tag)) => format!("{repo}:{tag}"),
            (Some(repo), None) => format!("{repo}@{}", root.digest),
            (None, Some(tag)) => format!("tag {tag} ({})", root.digest),
            (None, None) => root.digest.to_string(),
        };
        let target = match (&options.repository, &root.name.repository) {
            (Some(repo), _) => repo.clone(),
            (None, Some(source)) => match options.renames.iter().find(|(old, _)| old == source) {
                Some((_, new)) => new.clone(),
                None => RepoName::parse(source).map_err(|e| ImportError::InvalidName {
                    what: "repository",
                    name: source.clone(),
                    why: e.to_string(),
                })?,
            },
            (None, None) if root.name.tag.is_none() => {
                unnamed.push(root.digest);
                continue;
            }
            (None, None) => return Err(ImportError::NoRepository { image: what }),
        };
        let tag = root
            .name
            .tag
            .as_deref()
            .map(|t| {
                Tag::parse(t).map_err(|e| ImportError::InvalidName {
                    what: "tag",
                    name: t.to_string(),
                    why: e.to_string(),
                })
            })
            .transpose()?;
        let plan = plans.entry(target).or_default();
        walk(r, plan, &root.digest, &what, 0)?;
        plan.refs.push((tag, root.digest));
    }
    // Unnamed references: with their subject's repository, else the only one there is.
    for digest in unnamed {
        let manifest = read_manifest(r, &digest)?;
        let subject = manifest.as_ref().and_then(|m| m.subject.as_ref()).map(|s| s.digest.clone());
        let with_subject: Vec<RepoName> = plans
            .iter()
            .filter(|(_, p)| subject.as_ref().is_some_and(|s| p.manifests.contains_key(s)))
            .map(|(name, _)| name.clone())
            .collect();
        let targets = if !with_subject.is_empty() {
            with_subject
        } else if let Some(repo) = &options.repository {
            vec![repo.clone()]
        } else if plans.len() == 1 {
            plans.keys().cloned().collect()
        } else {
            return Err(ImportError::NoRepository { image: digest.to_string() });
        };
        for repo in targets {
            let plan = plans.entry(repo).or_default();
            walk(r, plan, &digest, digest.as_str(), 0)?;
            plan.refs.push((None, digest.clone()));
        }
    }
    // Referrers: manifests of the stream whose subject a repository gets (repeated: a
    // signature of an SBOM follows the SBOM).
    let mut candidates: Vec<(Digest, Manifest)> = Vec::new();
    for (digest, (_, size)) in &r.blobs {
        if *size > MAX_MANIFEST_BYTES as u64
            || plans.values().any(|p| p.manifests.contains_key(digest) || p.blobs.contains(digest))
        {
            continue;
        }
        let Some(bytes) = r.small_blob(digest, MAX_MANIFEST_BYTES)? else { continue };
        if !looks_like_json_object(&bytes) {
            continue;
        }
        if let Ok(m) = Manifest::parse(None, &bytes) {
            if m.subject.is_some() {
                candidates.push((digest.clone(), m));
            }
        }
    }
    loop {
        let mut joined = false;
        for (digest, m) in &candidates {
            let Some(subject) = m.subject.as_ref().map(|s| &s.digest) else { continue };
            for plan in plans.values_mut() {
                if plan.manifests.contains_key(subject) && !plan.manifests.contains_key(digest) {
                    walk(r, plan, digest, &format!("a referrer of {subject}"), 0)?;
                    plan.referrers += 1;
                    joined = true;
                }
            }
        }
        if !joined {
            break;
        }
    }
    Ok(plans)
}

// ---------------------------------------------------------------------------------------------
// Committing

fn refused(repo: &RepoName, item: String, why: String) -> ImportError {
    ImportError::Refused { repository: repo.to_string(), item, why }
}

/// Commits one repository's plan: blobs, manifests (children and subjects first), tags.
fn commit(
    store: &Store,
    r: &Received,
    repo: &RepoName,
    plan: &RepoPlan,
    report: &mut ImportReport,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImportError> {
    let blobs: Vec<&Digest> = plan.blobs.iter().collect();
    for batch in blobs.chunks(BATCH) {
        let items: Vec<(&Digest, Option<&StagedFile>)> = batch.iter().map(|d| (*d, r.staged(d))).collect();
        let outcomes = store.adopt_staged_blobs(repo, &items)?;
        for (d, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Ok(_) => {}
                Err(why) => return Err(refused(repo, format!("blob {d}"), why)),
            }
        }
    }
    let mut done: BTreeSet<&Digest> = BTreeSet::new();
    let mut pending: Vec<(&Digest, &Manifest)> = plan.manifests.iter().collect();
    // Images before indexes: fewer rounds.
    pending.sort_by_key(|(_, m)| m.kind == ManifestKind::Index);
    while !pending.is_empty() {
        let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, m)| {
            m.children.iter().all(|c| done.contains(&c.digest))
                && m.subject
                    .as_ref()
                    .map_or(true, |s| !plan.manifests.contains_key(&s.digest) || done.contains(&s.digest))
        });
        if ready.is_empty() {
            let d = waiting.first().map(|(d, _)| d.to_string()).unwrap_or_default();
            return Err(refused(repo, format!("manifest {d}"), String::from("its references form a cycle")));
        }
        for (digest, _) in ready {
            commit_manifest(store, r, repo, digest, report)?;
            done.insert(digest);
        }
        pending = waiting;
    }
    report.referrers += plan.referrers;
    for (tag, digest) in &plan.refs {
        let media_type = plan.manifests.get(digest).map(|m| m.media_type.clone()).unwrap_or_default();
        let (outcome, shown) = match tag {
            Some(tag) => {
                let outcome = match store.import_tag(repo, tag, digest)? {
                    TagAdoption::Set => "set",
                    TagAdoption::Present => "present",
                    TagAdoption::Moved(_) => "moved",
                    TagAdoption::Differs(other) => {
                        return Err(refused(repo, format!("tag {tag}"), format!("names {other}")));
                    }
                };
                (outcome, format!("{repo}:{tag}"))
            }
            None => ("untagged", format!("{repo}@{digest}")),
        };
        progress(&format!("imported {shown} ({digest})"));
        report.images.push(ImportedImage {
            repository: repo.to_string(),
            tag: tag.as_ref().map(|t| t.as_str().to_string()),
            digest: digest.to_string(),
            media_type,
            outcome: outcome.to_string(),
        });
    }
    Ok(())
}

fn commit_manifest(
    store: &Store,
    r: &Received,
    repo: &RepoName,
    digest: &Digest,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    match store.manifest(repo, digest) {
        Ok(_) => {
            report.manifests_present += 1;
            return Ok(());
        }
        Err(StoreError::ManifestUnknown | StoreError::NameUnknown) => {}
        Err(e) => return Err(e.into()),
    }
    let outcome = match r.staged(digest) {
        Some(file) => {
            let body = store.read_staged(file, MAX_MANIFEST_BYTES)?.ok_or_else(|| {
                refused(repo, format!("manifest {digest}"), format!("larger than {MAX_MANIFEST_BYTES} bytes"))
            })?;
            store.adopt_staged_manifest(repo, file, &body)?
        }
        None => store
            .adopt_stored_manifest(repo, digest)?
            .unwrap_or_else(|| Err(String::from("no longer in the store (deleted meanwhile); run again"))),
    };
    outcome.map_err(|why| refused(repo, format!("manifest {digest}"), why))?;
    report.manifests += 1;
    Ok(())
}
