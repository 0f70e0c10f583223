//! The formats of air-gapped bundles (ARCHITECTURE.md, "Bundles"): `pier-bundle.json`, the
//! manifest of a bundle's contents, and the inventory a site writes of what it holds. Pure
//! types; reading them validates every name and digest (a bundle is untrusted input).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::{Digest, RepoName, Tag};

/// The version of `pier-bundle.json` this code writes and reads.
pub const BUNDLE_VERSION: u32 = 1;
/// The version of the inventory format this code writes and reads.
pub const INVENTORY_VERSION: u32 = 1;
/// The path of the bundle manifest inside the tar stream (its second entry).
pub const BUNDLE_MANIFEST_PATH: &str = "pier-bundle.json";
/// Largest `pier-bundle.json` or inventory read (a million blobs take ~90 MB; this is far
/// beyond any real bundle and still a bound).
pub const MAX_FORMAT_BYTES: usize = 256 * 1024 * 1024;

/// `pier-bundle.json`: what a bundle holds and what it leaves out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleManifest {
    pub pier_bundle_version: u32,
    /// RFC 3339, UTC.
    pub created: String,
    /// Every exported reference.
    pub images: Vec<BundleImage>,
    /// Every blob in the bundle, in stream order (manifests included).
    pub blobs: Vec<BlobEntry>,
    /// Blobs the images need that the bundle leaves out (a delta): the target must have them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<BlobEntry>,
    /// The digest of the inventory file a delta was made against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Digest>,
}

/// One exported reference: `repository:tag`, or `repository@digest` when `tag` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleImage {
    pub repository: RepoName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A blob and its size.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
}

/// What a site holds: the digests of its blobs (manifests included), sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub pier_inventory_version: u32,
    /// RFC 3339, UTC.
    pub created: String,
    pub blobs: Vec<Digest>,
}

/// Why a bundle manifest or an inventory was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// Larger than [`MAX_FORMAT_BYTES`].
    TooLarge,
    /// Not the JSON of the format (includes invalid names, tags and digests).
    Invalid(String),
    /// A version this code does not read.
    UnsupportedVersion(u32),
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FormatError::TooLarge => write!(f, "larger than {MAX_FORMAT_BYTES} bytes"),
            FormatError::Invalid(why) => write!(f, "invalid: {why}"),
            FormatError::UnsupportedVersion(v) => write!(f, "format version {v} is not supported"),
        }
    }
}

impl BundleManifest {
    /// Reads `pier-bundle.json`.
    pub fn parse(bytes: &[u8]) -> Result<BundleManifest, FormatError> {
        let m: BundleManifest = parse_json(bytes)?;
        if m.pier_bundle_version != BUNDLE_VERSION {
            return Err(FormatError::UnsupportedVersion(m.pier_bundle_version));
        }
        Ok(m)
    }
}

impl Inventory {
    /// Reads an inventory file.
    pub fn parse(bytes: &[u8]) -> Result<Inventory, FormatError> {
        let inv: Inventory = parse_json(bytes)?;
        if inv.pier_inventory_version != INVENTORY_VERSION {
            return Err(FormatError::UnsupportedVersion(inv.pier_inventory_version));
        }
        Ok(inv)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    if bytes.len() > MAX_FORMAT_BYTES {
        return Err(FormatError::TooLarge);
    }
    serde_json::from_slice(bytes).map_err(|e| FormatError::Invalid(alloc::format!("{e}")))
}

/// The path of a blob in an OCI image layout: `blobs/<alg>/<hex>`.
pub fn blob_path(digest: &Digest) -> String {
    alloc::format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_manifest_round_trips_and_bad_names_or_digests_are_refused() {
        let d = Digest::of(crate::core::Algorithm::Sha256, b"x");
        let m = BundleManifest {
            pier_bundle_version: BUNDLE_VERSION,
            created: String::from("2026-11-28T01:00:00Z"),
            images: alloc::vec![BundleImage {
                repository: RepoName::parse("library/alpine").unwrap(),
                tag: Some(Tag::parse("3.20").unwrap()),
                digest: d.clone(),
                media_type: String::from("application/vnd.oci.image.manifest.v1+json"),
                size: 1,
            }],
            blobs: alloc::vec![BlobEntry { digest: d.clone(), size: 1 }],
            excluded: Vec::new(),
            inventory: None,
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(BundleManifest::parse(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("excluded"), "empty lists are left out: {text}");
        let bad_repo = text.replace("library/alpine", "../etc");
        assert!(matches!(BundleManifest::parse(bad_repo.as_bytes()), Err(FormatError::Invalid(_))));
        let bad_digest = text.replace(d.hex(), "zz");
        assert!(matches!(BundleManifest::parse(bad_digest.as_bytes()), Err(FormatError::Invalid(_))));
        let newer = text.replace("\"pierBundleVersion\":1", "\"pierBundleVersion\":2");
        assert_eq!(BundleManifest::parse(newer.as_bytes()), Err(FormatError::UnsupportedVersion(2)));
        assert_eq!(blob_path(&d), alloc::format!("blobs/sha256/{}", d.hex()));
    }

    #[test]
    fn an_inventory_round_trips() {
        let inv = Inventory {
            pier_inventory_version: INVENTORY_VERSION,
            created: String::from("2026-11-28T01:00:00Z"),
            blobs: alloc::vec![Digest::of(crate::core::Algorithm::Sha256, b"a")],
        };
        let bytes = serde_json::to_vec(&inv).unwrap();
        assert_eq!(Inventory::parse(&bytes).unwrap(), inv);
        assert!(matches!(Inventory::parse(b"{}"), Err(FormatError::Invalid(_))));
    }
}
