//! Each repository's `index.json`: derived from the metadata, rewritten (atomically) after every
//! change of the repository's manifests or tags, and only when its content changes (spares
//! flash storage at every start-up).
//!
//! It lists every tag (with `org.opencontainers.image.ref.name`) and every untagged manifest that
//! is not a child of an index, so that layout tools (skopeo, umoci) see all live content.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use super::error::Result;
use super::meta::{ManifestRecord, MANIFESTS, TAGS};
use super::{layout, Store};
use crate::core::manifest::{Descriptor, ImageIndex};
use crate::core::{Digest, RepoName};

/// Config media types of ordinary images (as opposed to artifacts).
const IMAGE_CONFIG_TYPES: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// The annotation that names a tag in an image layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A manifest's entry in `index.json`: plain images carry no `artifactType` (artifacts do), and
/// the only annotation is the tag's name, if any.
fn entry(digest: Digest, record: &ManifestRecord, tag: Option<&str>) -> Descriptor {
    let mut d = record.descriptor(digest);
    d.artifact_type = d.artifact_type.filter(|a| !IMAGE_CONFIG_TYPES.contains(&a.as_str()));
    d.annotations = tag.map(|t| BTreeMap::from([(REF_NAME.to_string(), t.to_string())])).unwrap_or_default();
    d
}

/// The bytes of an `index.json` listing `entries`.
fn render(entries: Vec<Descriptor>) -> Vec<u8> {
    serde_json::to_vec_pretty(&ImageIndex::new(entries)).unwrap_or_default()
}

impl Store {
    /// Rewrites `repositories/<repo>/index.json` from the metadata (call with the write lock
    /// held). Returns whether the file changed.
    pub(super) fn write_index(&self, repo: &RepoName) -> Result<bool> {
        let bytes = self.render_index(repo)?;
        self.disk.ensure_dir(&self.paths.repo(repo))?;
        let oci_layout = self.paths.oci_layout(repo);
        if !oci_layout.exists() {
            self.disk.replace(&oci_layout, layout::OCI_LAYOUT)?;
        }
        let path = self.paths.index(repo);
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
        self.disk.replace(&path, &bytes)?;
        Ok(true)
    }

    /// The `index.json` that the metadata of `repo` describes.
    pub(super) fn render_index(&self, repo: &RepoName) -> Result<Vec<u8>> {
        let txn = self.db.begin_read()?;
        let r = repo.as_str();
        let mut records: BTreeMap<String, ManifestRecord> = BTreeMap::new();
        for e in txn.open_table(MANIFESTS)?.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = e?;
            let (kr, d) = k.value();
            if kr != r {
                break;
            }
            if let Some(rec) = ManifestRecord::decode(v.value()) {
                records.insert(d.to_string(), rec);
            }
        }
        let children: BTreeSet<&str> = records.values().flat_map(|m| m.children.iter().map(String::as_str)).collect();
        let mut tagged: BTreeSet<&str> = BTreeSet::new();
        let mut entries = Vec::new();
        for e in txn.open_table(TAGS)?.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = e?;
            let (kr, tag) = k.value();
            if kr != r {
                break;
            }
            if let Some((digest, rec)) = records.get_key_value(v.value()) {
                if let Ok(d) = Digest::parse(digest) {
                    entries.push(entry(d, rec, Some(tag)));
                    tagged.insert(digest.as_str());
                }
            }
        }
        for (digest, rec) in &records {
            if !tagged.contains(digest.as_str()) && !children.contains(digest.as_str()) {
                if let Ok(d) = Digest::parse(digest) {
                    entries.push(entry(d, rec, None));
                }
            }
        }
        Ok(render(entries))
    }
}
