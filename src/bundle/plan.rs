//! The plan of an export: which references, which manifests, which blobs in which order, what
//! a delta leaves out, and the small JSON entries of the bundle. Reads the source; writes
//! nothing.
//!
//! - References: `repo:tag`, `repo@digest`, `repo` (every tag), `--all` (every tag of every
//!   repository); the same reference named twice is exported once.
//! - The walk from each reference: an index's children, then the index; each manifest's
//!   referrers after it (signatures, SBOMs, and their referrers in turn), to [`MAX_DEPTH`]
//!   levels. Every manifest's bytes are checked against its digest and every child's length
//!   against its descriptor. Each digest is planned once, read from the first repository where
//!   the walk met it.
//! - Stream order (`ExportPlan::blobs`): layers and configs first, then manifests, children
//!   before their index, subjects before their referrers.
//! - `--platform`: an index keeps only the children of those platforms. When every child is
//!   kept, the index is exported as it is; otherwise it is **rewritten**: the same JSON with
//!   only the kept entries in `manifests` (every other field as it was), a new manifest with a
//!   new digest, which is what the bundle names. The referrers of the original index are left
//!   out (they sign or describe content the bundle does not carry); the children's are kept.
//!   A single-platform image is exported as it is whatever `--platform` says.
//! - Deltas: a layer or config the inventory lists is left out and recorded in `excluded`.
//!   Manifests are always written, even when the inventory lists them: they are small, and an
//!   import can then check the whole graph of every image from the bundle alone.

use std::collections::HashSet;

use serde::Deserialize;

use super::export::{Exclusion, ExportError, ExportEvent, ExportRequest};
use super::source::{BundleSource, FetchedManifest};
use crate::core::bundle::{blob_path, BlobEntry, BundleImage, BundleManifest, BUNDLE_VERSION};
use crate::core::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::core::{Digest, Manifest, ManifestKind, RepoName, Tag};

/// How deep the walk follows children and referrers.
pub const MAX_DEPTH: usize = 16;

/// The annotation of the tag in `index.json` (skopeo's `oci-archive:FILE:REF` matches it).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The image name containerd (`ctr import`, nerdctl) reads.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const PIER_REPOSITORY: &str = "io.pier.repository";
pub const PIER_TAG: &str = "io.pier.tag";

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// One entry of the stream.
pub(super) struct PlannedBlob {
    /// Where to read it from.
    pub repo: RepoName,
    pub digest: Digest,
    pub size: u64,
    pub kind: PlannedKind,
}

pub(super) enum PlannedKind {
    /// A layer or config: read from the source as it is written.
    Blob,
    /// A manifest as the source holds it: fetched again (and checked again) as it is written.
    Manifest,
    /// A manifest this export made (an index narrowed by `--platform`).
    Rewritten(Vec<u8>),
}

/// One exported reference.
pub(super) struct PlannedImage {
    pub image: BundleImage,
}

/// Everything the writer needs.
pub(super) struct ExportPlan {
    pub images: Vec<PlannedImage>,
    /// In stream order.
    pub blobs: Vec<PlannedBlob>,
    pub excluded: Vec<BlobEntry>,
    /// Unix seconds of the plan (`created`, and every entry's mtime).
    pub created: u64,
    pub bundle_json: Vec<u8>,
    pub index_json: Vec<u8>,
    /// `manifest.json` for `docker load`; `None` for a delta.
    pub docker_json: Option<Vec<u8>>,
}

impl ExportPlan {
    /// The length of the tar stream the writer produces for this plan.
    pub fn stream_bytes(&self) -> u64 {
        let mut total = tar_entry_bytes("oci-layout", super::tar_out::OCI_LAYOUT.len() as u64)
            + tar_entry_bytes(crate::core::bundle::BUNDLE_MANIFEST_PATH, self.bundle_json.len() as u64)
            + tar_entry_bytes("index.json", self.index_json.len() as u64);
        for b in &self.blobs {
            total += tar_entry_bytes(&blob_path(&b.digest), b.size);
        }
        if let Some(docker) = &self.docker_json {
            total += tar_entry_bytes("manifest.json", docker.len() as u64);
        }
        total + 1024
    }
}

/// The bytes a tar entry of `size` bytes at `path` takes: its header, a GNU long-name entry
/// when ustar cannot hold the path, the data padded to 512.
fn tar_entry_bytes(path: &str, size: u64) -> u64 {
    let round = |n: u64| n.div_ceil(512) * 512;
    let fits_ustar = path.len() <= 100
        || path.char_indices().any(|(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0);
    let long_name = if fits_ustar { 0 } else { 512 + round(path.len() as u64 + 1) };
    long_name + 512 + round(size)
}

/// A platform of `--platform`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Platform, ExportError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None })
            }
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(variant.to_string()) })
            }
            _ => Err(ExportError::Platform(text.to_string())),
        }
    }

    /// The platform this program runs on (`linux/amd64`, `linux/arm64`...).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform { os: std::env::consts::OS.to_string(), architecture: architecture.to_string(), variant: None }
    }

    /// Whether an index entry's platform is this one (a variant given must match; none given
    /// matches any).
    fn matches(&self, p: &IndexPlatform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && self.variant.as_ref().map_or(true, |v| p.variant.as_deref() == Some(v.as_str()))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What the plan reads of an index entry (the rest is kept as it is).
#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Deserialize)]
struct IndexPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// A reference as named.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Named {
    Tag(RepoName, Tag),
    Digest(RepoName, Digest),
}

/// Parses `repo`, `repo:tag` or `repo@digest`: `Ok(Err(repo))` for a bare repository.
fn parse_reference(text: &str) -> Result<Result<Named, RepoName>, ExportError> {
    let bad = |why: String| ExportError::Reference { reference: text.to_string(), why };
    let repo = |name: &str| RepoName::parse(name).map_err(|e| bad(e.to_string()));
    if let Some((name, digest)) = text.split_once('@') {
        let digest = Digest::parse(digest).map_err(|e| bad(e.to_string()))?;
        return Ok(Ok(Named::Digest(repo(name)?, digest)));
    }
    let slash = text.rfind('/').map_or(0, |i| i + 1);
    match text[slash..].find(':') {
        Some(colon) => {
            let (name, tag) = (&text[..slash + colon], &text[slash + colon + 1..]);
            let tag = Tag::parse(tag).map_err(|e| bad(format!("tag {tag:?}: {e}")))?;
            Ok(Ok(Named::Tag(repo(name)?, tag)))
        }
        None => Ok(Err(repo(text)?)),
    }
}

/// Every reference the request names, each once, in the order named (`--all` first).
fn references(source: &dyn BundleSource, request: &ExportRequest) -> Result<Vec<Named>, ExportError> {
    let mut named = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |n: Named, named: &mut Vec<Named>| {
        if seen.insert(n.clone()) {
            named.push(n);
        }
    };
    if request.all {
        for repo in source.repositories()? {
            for tag in source.tags(&repo)? {
                add(Named::Tag(repo.clone(), tag), &mut named);
            }
        }
        if named.is_empty() && request.references.is_empty() {
            return Err(ExportError::Nothing("the source holds no tagged image".into()));
        }
    }
    for text in &request.references {
        match parse_reference(text.trim())? {
            Ok(n) => add(n, &mut named),
            Err(repo) => {
                let tags = source.tags(&repo)?;
                if tags.is_empty() {
                    return Err(ExportError::NoTags(repo.to_string()));
                }
                for tag in tags {
                    add(Named::Tag(repo.clone(), tag), &mut named);
                }
            }
        }
    }
    if named.is_empty() {
        return Err(ExportError::Nothing("no reference given (REF..., --all or --from-list FILE)".into()));
    }
    Ok(named)
}

/// The docker `manifest.json` entry of a tagged image.
struct DockerEntry {
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
    repo_tags: Vec<String>,
}

struct Planner<'a> {
    source: &'a dyn BundleSource,
    exclusion: Option<&'a Exclusion>,
    seen: HashSet<Digest>,
    layers: Vec<PlannedBlob>,
    manifests: Vec<PlannedBlob>,
    excluded: Vec<BlobEntry>,
}

/// Plans the export of `request` from `source` (see the module documentation).
pub(super) fn plan(
    source: &dyn BundleSource,
    request: &ExportRequest,
    exclusion: Option<&Exclusion>,
    progress: &mut dyn FnMut(ExportEvent),
) -> Result<ExportPlan, ExportError> {
    let platforms = request.platforms.iter().map(|p| Platform::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let named = references(source, request)?;
    let mut planner = Planner {
        source,
        exclusion,
        seen: HashSet::new(),
        layers: Vec::new(),
        manifests: Vec::new(),
        excluded: Vec::new(),
    };
    let mut images = Vec::new();
    let mut docker: Vec<DockerEntry> = Vec::new();
    for n in named {
        let (repo, tag, fetched) = match n {
            Named::Tag(repo, tag) => {
                let m = source.manifest_by_tag(&repo, &tag)?;
                (repo, Some(tag), m)
            }
            Named::Digest(repo, digest) => {
                let m = source.manifest_by_digest(&repo, &digest)?;
                (repo, None, m)
            }
        };
        let shown = match &tag {
            Some(t) => format!("{repo}:{t}"),
            None => format!("{repo}@{}", fetched.digest),
        };
        check_digest(&shown, &fetched.digest, &fetched.bytes)?;
        let (root, rewritten, docker_candidate) = narrow(&shown, fetched, &platforms)?;
        let image = BundleImage {
            repository: repo.clone(),
            tag: tag.clone(),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            size: root.bytes.len() as u64,
        };
        let new_blobs = planner.layers.len() + planner.manifests.len();
        planner.visit(&repo, root, rewritten, 0)?;
        let added = planner.layers.len() + planner.manifests.len() - new_blobs;
        let narrowed = if rewritten {
            let kept = platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
            format!(", narrowed to {kept}: a new index")
        } else {
            String::new()
        };
        progress(ExportEvent::Image(format!("{shown} {} ({added} new blob(s){narrowed})", image.digest)));
        if let (Some(tag), None, Some(candidate)) = (&tag, exclusion, docker_candidate) {
            let repo_tag = format!("{repo}:{tag}");
            if let Some(entry) = docker.iter_mut().find(|e| e.manifest == candidate) {
                entry.repo_tags.push(repo_tag);
            } else if let Some((config, layers)) = docker_image(source, &repo, &candidate)? {
                docker.push(DockerEntry { manifest: candidate, config, layers, repo_tags: vec![repo_tag] });
            }
        }
        images.push(PlannedImage { image });
    }
    let Planner { layers, manifests, excluded, .. } = planner;
    let mut blobs = layers;
    blobs.extend(manifests);
    let created = crate::store::now_unix();
    let bundle = BundleManifest {
        pier_bundle_version: BUNDLE_VERSION,
        created: rfc3339(created),
        images: images.iter().map(|i| i.image.clone()).collect(),
        blobs: blobs.iter().map(|b| BlobEntry { digest: b.digest.clone(), size: b.size }).collect(),
        excluded: excluded.clone(),
        inventory: exclusion.map(|e| e.inventory.clone()),
    };
    let bundle_json = to_json(&bundle)?;
    let index_json = to_json(&index_json(&images))?;
    let docker_json = match exclusion {
        Some(_) => None,
        None => Some(to_json(&docker_json(&docker))?),
    };
    Ok(ExportPlan { images, blobs, excluded, created, bundle_json, index_json, docker_json })
}

impl Planner<'_> {
    /// Plans `manifest` (of `repo`) and everything it reaches: children first, then itself,
    /// then its referrers. `rewritten`: made by this export (no referrers at the source).
    fn visit(
        &mut self,
        repo: &RepoName,
        manifest: FetchedManifest,
        rewritten: bool,
        depth: usize,
    ) -> Result<(), ExportError> {
        let what = format!("{repo}@{}", manifest.digest);
        if depth > MAX_DEPTH {
            return Err(ExportError::TooDeep(what));
        }
        if !self.seen.insert(manifest.digest.clone()) {
            return Ok(());
        }
        check_digest(&what, &manifest.digest, &manifest.bytes)?;
        let parsed = Manifest::parse(Some(&manifest.media_type), &manifest.bytes)
            .map_err(|e| ExportError::Manifest { what: what.clone(), why: e.to_string() })?;
        for blob in &parsed.blobs {
            if !self.seen.insert(blob.digest.clone()) {
                continue;
            }
            if self.exclusion.is_some_and(|e| e.contains(&blob.digest)) {
                self.excluded.push(BlobEntry { digest: blob.digest.clone(), size: blob.size });
            } else {
                self.layers.push(PlannedBlob {
                    repo: repo.clone(),
                    digest: blob.digest.clone(),
                    size: blob.size,
                    kind: PlannedKind::Blob,
                });
            }
        }
        for child in &parsed.children {
            let fetched = self.source.manifest_by_digest(repo, &child.digest)?;
            if fetched.bytes.len() as u64 != child.size {
                return Err(ExportError::SizeMismatch {
                    what: format!("{repo}@{}", child.digest),
                    expected: child.size,
                    actual: fetched.bytes.len() as u64,
                });
            }
            self.visit(repo, fetched, false, depth + 1)?;
        }
        let size = manifest.bytes.len() as u64;
        let kind = if rewritten { PlannedKind::Rewritten(manifest.bytes) } else { PlannedKind::Manifest };
        self.manifests.push(PlannedBlob { repo: repo.clone(), digest: manifest.digest.clone(), size, kind });
        if !rewritten {
            for referrer in self.source.referrers(repo, &manifest.digest)? {
                if self.seen.contains(&referrer) {
                    continue;
                }
                let fetched = self.source.manifest_by_digest(repo, &referrer)?;
                self.visit(repo, fetched, false, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// Applies `--platform` to a root manifest: the manifest to export, whether it was rewritten,
/// and the image `docker load` gets for it (if any).
fn narrow(
    shown: &str,
    root: FetchedManifest,
    platforms: &[Platform],
) -> Result<(FetchedManifest, bool, Option<Digest>), ExportError> {
    if !is_index(&root.media_type) {
        let candidate = is_image(&root.media_type).then(|| root.digest.clone());
        return Ok((root, false, candidate));
    }
    let bad = |why: String| ExportError::Manifest { what: shown.to_string(), why };
    let mut json: serde_json::Value = serde_json::from_slice(&root.bytes).map_err(|e| bad(e.to_string()))?;
    let entries = json
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .ok_or_else(|| bad("an index without a manifests list".into()))?;
    let parsed: Vec<IndexEntry> = entries
        .iter()
        .map(|e| serde_json::from_value(e.clone()).map_err(|e| bad(e.to_string())))
        .collect::<Result<_, _>>()?;
    let kept: Vec<usize> = if platforms.is_empty() {
        (0..parsed.len()).collect()
    } else {
        (0..parsed.len())
            .filter(|&i| parsed[i].platform.as_ref().is_some_and(|p| platforms.iter().any(|want| want.matches(p))))
            .collect()
    };
    if kept.is_empty() {
        let platforms = platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
        return Err(ExportError::NoPlatform { image: shown.to_string(), platforms });
    }
    // docker load gets the first platform asked for, else this machine's, else the first child.
    let host = Platform::host();
    let preferred = platforms.iter().chain(std::iter::once(&host));
    let images: Vec<usize> = kept.iter().copied().filter(|&i| is_image(&parsed[i].media_type)).collect();
    let candidate = preferred
        .filter_map(|want| images.iter().find(|&&i| parsed[i].platform.as_ref().is_some_and(|p| want.matches(p))))
        .next()
        .or(images.first())
        .and_then(|&i| Digest::parse(&parsed[i].digest).ok());
    if kept.len() == parsed.len() {
        return Ok((root, false, candidate));
    }
    let narrowed: Vec<serde_json::Value> = kept.iter().map(|&i| entries[i].clone()).collect();
    if let Some(object) = json.as_object_mut() {
        object.insert("manifests".into(), serde_json::Value::Array(narrowed));
    }
    let bytes = serde_json::to_vec(&json).map_err(|e| bad(e.to_string()))?;
    let digest = Digest::of(root.digest.algorithm(), &bytes);
    Ok((FetchedManifest { digest, media_type: root.media_type, bytes }, true, candidate))
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn is_image(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// The config and layers of the image manifest `digest`, if `docker load` can load it (its
/// config is an image config, not an artifact's).
fn docker_image(
    source: &dyn BundleSource,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<(Digest, Vec<Digest>)>, ExportError> {
    let fetched = source.manifest_by_digest(repo, digest)?;
    let parsed = Manifest::parse(Some(&fetched.media_type), &fetched.bytes)
        .map_err(|e| ExportError::Manifest { what: format!("{repo}@{digest}"), why: e.to_string() })?;
    if parsed.kind != ManifestKind::Image {
        return Ok(None);
    }
    let Some((config, layers)) = parsed.blobs.split_first() else { return Ok(None) };
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Ok(None);
    }
    Ok(Some((config.digest.clone(), layers.iter().map(|l| l.digest.clone()).collect())))
}

fn check_digest(what: &str, digest: &Digest, bytes: &[u8]) -> Result<(), ExportError> {
    let actual = Digest::of(digest.algorithm(), bytes);
    if &actual != digest {
        return Err(ExportError::DigestMismatch { what: what.to_string(), expected: digest.clone(), actual });
    }
    Ok(())
}

/// `index.json`: one descriptor per exported reference.
fn index_json(images: &[PlannedImage]) -> serde_json::Value {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            let image = &i.image;
            let mut annotations = serde_json::Map::new();
            annotations.insert(PIER_REPOSITORY.into(), image.repository.as_str().into());
            if let Some(tag) = &image.tag {
                let name = format!("{}:{}", image.repository, tag);
                annotations.insert(REF_NAME.into(), name.clone().into());
                annotations.insert(CONTAINERD_NAME.into(), name.into());
                annotations.insert(PIER_TAG.into(), tag.as_str().into());
            }
            serde_json::json!({
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": image.size,
                "annotations": annotations,
            })
        })
        .collect();
    serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests })
}

/// docker save's `manifest.json`.
fn docker_json(entries: &[DockerEntry]) -> serde_json::Value {
    serde_json::Value::Array(
        entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "Config": blob_path(&e.config),
                    "RepoTags": e.repo_tags,
                    "Layers": e.layers.iter().map(blob_path).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, ExportError> {
    serde_json::to_vec(value).map_err(|e| ExportError::Manifest { what: "bundle entry".into(), why: e.to_string() })
}

/// Unix seconds as RFC 3339 in UTC (`2026-11-28T01:00:00Z`).
pub(super) fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Algorithm;

    #[test]
    fn references_parse_as_tag_digest_or_repository() {
        let d = Digest::of(Algorithm::Sha256, b"x");
        assert_eq!(
            parse_reference("library/alpine:3.20").unwrap(),
            Ok(Named::Tag(RepoName::parse("library/alpine").unwrap(), Tag::parse("3.20").unwrap()))
        );
        assert_eq!(
            parse_reference(&format!("a/b@{d}")).unwrap(),
            Ok(Named::Digest(RepoName::parse("a/b").unwrap(), d.clone()))
        );
        assert_eq!(parse_reference("a/b").unwrap(), Err(RepoName::parse("a/b").unwrap()));
        assert!(parse_reference("a/b:").is_err());
        assert!(parse_reference("a/b@sha256:zz").is_err());
        assert!(parse_reference("../x").is_err());
        assert!(parse_reference("").is_err());
    }

    #[test]
    fn platforms_parse_and_match() {
        let arm = Platform::parse("linux/arm64").unwrap();
        let v8 = IndexPlatform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) };
        assert!(arm.matches(&v8));
        assert!(Platform::parse("linux/arm64/v8").unwrap().matches(&v8));
        assert!(!Platform::parse("linux/arm64/v7").unwrap().matches(&v8));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&v8));
        for bad in ["linux", "linux/", "/arm64", "a/b/c/d", "linux/arm 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tar_entry_sizes_count_headers_padding_and_long_names() {
        assert_eq!(tar_entry_bytes("oci-layout", 0), 512);
        assert_eq!(tar_entry_bytes("oci-layout", 1), 1024);
        assert_eq!(tar_entry_bytes("oci-layout", 512), 1024);
        let sha512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(tar_entry_bytes(&blob_path(&sha512), 1), 512 + 512 + 512 + 512);
    }
}
