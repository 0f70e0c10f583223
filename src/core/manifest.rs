//! Manifest parsing and validation: OCI image manifest and index, Docker schema 2 manifest and
//! manifest list. Schema 1 is refused.
//!
//! Parsing never rewrites the bytes: the registry stores and serves exactly what was pushed;
//! this module only extracts what the registry must check (referenced blobs and child
//! manifests) and index (subject, artifact type, annotations).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::core::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest manifest accepted, as Distribution and the spec's conformance suite expect.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// Points at a config blob and layer blobs.
    Image,
    /// Points at other manifests.
    Index,
}

/// A reference to content: what a manifest says about its config, layers, children and subject,
/// and what the registry writes in an image index (`index.json` of a repository's layout, the
/// referrers response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index as the registry writes it (never used to parse: pushed indexes are parsed
/// by [`Manifest::parse`] and stored byte for byte).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    pub media_type: &'static str,
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    pub fn new(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex { schema_version: 2, media_type: OCI_INDEX, manifests }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// For images: the config first, then the layers. For indexes: empty.
    pub blobs: Vec<Descriptor>,
    /// For indexes: the child manifests. For images: empty.
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or else the config's media type (what the referrers API reports).
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Non-distributable layers ("foreign" layers: Windows base images) that name `urls`:
    /// clients fetch them from there, so the registry need not hold them. Not in `blobs`.
    pub external: Vec<Descriptor>,
    /// Every URL a layer descriptor names (the registry's URL rules apply to each).
    pub urls: Vec<String>,
}

/// Whether a layer media type marks a non-distributable ("foreign") layer: OCI's
/// `application/vnd.oci.image.layer.nondistributable.v1.tar*` (deprecated but still pushed) and
/// Docker's `application/vnd.docker.image.rootfs.foreign.diff.tar*`.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.diff.tar")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// Docker schema 1: deprecated, signed with keys nobody has; refused.
    Schema1,
    /// The media type is not a manifest type pier stores.
    UnsupportedMediaType(String),
    /// Structurally invalid; the text says why.
    Invalid(String),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Schema1 => f.write_str(
                "Docker schema 1 manifests are not supported: push with a client that converts to schema 2 or OCI (any current docker, podman or skopeo does)",
            ),
            ManifestError::UnsupportedMediaType(t) => write!(f, "unsupported manifest media type {t:?}"),
            ManifestError::Invalid(why) => write!(f, "invalid manifest: {why}"),
        }
    }
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn is_generic(content_type: &str) -> bool {
    matches!(content_type, "" | "application/json" | "application/octet-stream" | "text/plain")
}

fn known(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

fn descriptor(raw: RawDescriptor, what: &str) -> Result<Descriptor, ManifestError> {
    let digest = Digest::parse(&raw.digest)
        .map_err(|e| ManifestError::Invalid(format!("{what} has an invalid digest {:?}: {e}", raw.digest)))?;
    let size = u64::try_from(raw.size).map_err(|_| ManifestError::Invalid(format!("{what} has a negative size")))?;
    let media_type = raw.media_type.unwrap_or_default();
    Ok(Descriptor { media_type, artifact_type: None, digest, size, annotations: BTreeMap::new() })
}

impl Manifest {
    /// Parses `bytes` pushed with the given `Content-Type` (parameters already allowed).
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let ct = content_type.unwrap_or("").split(';').next().unwrap_or("").trim();
        if ct == DOCKER_SCHEMA1 || ct == DOCKER_SCHEMA1_SIGNED {
            return Err(ManifestError::Schema1);
        }
        if !is_generic(ct) && known(ct).is_none() {
            return Err(ManifestError::UnsupportedMediaType(String::from(ct)));
        }
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(format!("not a JSON manifest: {e}")))?;
        match raw.schema_version {
            Some(2) => {}
            Some(1) => return Err(ManifestError::Schema1),
            Some(v) => return Err(ManifestError::Invalid(format!("schemaVersion {v} is not 2"))),
            None => return Err(ManifestError::Invalid(String::from("schemaVersion is missing"))),
        }
        if let Some(body_type) = raw.media_type.as_deref() {
            if body_type == DOCKER_SCHEMA1 || body_type == DOCKER_SCHEMA1_SIGNED {
                return Err(ManifestError::Schema1);
            }
            if !is_generic(ct) && body_type != ct {
                return Err(ManifestError::Invalid(format!(
                    "mediaType {body_type:?} in the manifest differs from Content-Type {ct:?}"
                )));
            }
        }
        let media_type = if !is_generic(ct) {
            String::from(ct)
        } else if let Some(t) = raw.media_type.clone() {
            t
        } else if raw.manifests.is_some() {
            String::from(OCI_INDEX)
        } else {
            String::from(OCI_MANIFEST)
        };
        let kind = known(&media_type).ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;

        let mut blobs = Vec::new();
        let mut external = Vec::new();
        let mut urls = Vec::new();
        let mut children = Vec::new();
        let mut artifact_type = raw.artifact_type;
        match kind {
            ManifestKind::Image => {
                if raw.manifests.is_some() {
                    return Err(ManifestError::Invalid(String::from("an image manifest cannot have \"manifests\"")));
                }
                let config = raw.config.ok_or_else(|| ManifestError::Invalid(String::from("\"config\" is missing")))?;
                let config = descriptor(config, "config")?;
                if artifact_type.is_none() && !config.media_type.is_empty() {
                    artifact_type = Some(config.media_type.clone());
                }
                blobs.push(config);
                for (i, mut l) in raw.layers.unwrap_or_default().into_iter().enumerate() {
                    let layer_urls = l.urls.take().unwrap_or_default();
                    let layer = descriptor(l, &format!("layer {i}"))?;
                    if is_non_distributable(&layer.media_type) && !layer_urls.is_empty() {
                        external.push(layer);
                    } else {
                        blobs.push(layer);
                    }
                    urls.extend(layer_urls);
                }
            }
            ManifestKind::Index => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(ManifestError::Invalid(String::from("an index cannot have \"config\" or \"layers\"")));
                }
                let list =
                    raw.manifests.ok_or_else(|| ManifestError::Invalid(String::from("\"manifests\" is missing")))?;
                for (i, m) in list.into_iter().enumerate() {
                    children.push(descriptor(m, &format!("manifest {i}"))?);
                }
            }
        }
        let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
        Ok(Manifest {
            media_type,
            kind,
            blobs,
            children,
            subject,
            artifact_type,
            annotations: raw.annotations.unwrap_or_default(),
            external,
            urls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest() {
        let m = Manifest::parse(Some(OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.blobs[1].digest.as_str(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x.sbom","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":9}},"annotations":{{"a":"b"}}"#
        );
        let m = Manifest::parse(Some(&format!("{OCI_MANIFEST}; charset=utf-8")), image(&extra).as_bytes()).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sbom"));
        assert_eq!(m.subject.unwrap().digest.as_str(), D1);
        assert_eq!(m.annotations.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn index_and_inference() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#
        );
        let m = Manifest::parse(Some("application/json"), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.children.len(), 1);
        let m = Manifest::parse(Some(DOCKER_MANIFEST_LIST), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST_LIST);
    }

    #[test]
    fn non_distributable_layers_with_urls_are_external() {
        let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
        let url = "https://mcr.microsoft.com/v2/windows/blobs/x";
        let body = image("").replace(
            r#""layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar""#,
            &format!(r#""layers":[{{"mediaType":"{foreign}","urls":["{url}"]}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar""#),
        );
        // The first layer has no digest yet: give it one.
        let body = body.replacen(r#""urls":["#, &format!(r#""digest":"{D1}","size":5,"urls":["#), 1);
        let m = Manifest::parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.external.len(), 1);
        assert_eq!(m.external[0].media_type, foreign);
        assert_eq!(m.blobs.len(), 2, "config and the distributable layer");
        assert_eq!(m.urls, [url]);
        // Without URLs a non-distributable layer is an ordinary blob (it must be in the registry).
        let body = image("").replace(
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
        );
        let m = Manifest::parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert!(m.external.is_empty());
        assert_eq!(m.blobs.len(), 2);
        assert!(is_non_distributable("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"));
        assert!(!is_non_distributable("application/vnd.oci.image.layer.v1.tar+gzip"));
    }

    #[test]
    fn refusals() {
        assert_eq!(Manifest::parse(Some(DOCKER_SCHEMA1_SIGNED), b"{}"), Err(ManifestError::Schema1));
        assert_eq!(Manifest::parse(None, br#"{"schemaVersion":1,"fsLayers":[]}"#), Err(ManifestError::Schema1));
        assert!(matches!(Manifest::parse(Some(OCI_MANIFEST), b"not json"), Err(ManifestError::Invalid(_))));
        assert!(matches!(
            Manifest::parse(Some(OCI_MANIFEST), b"{\"schemaVersion\":3}"),
            Err(ManifestError::Invalid(_))
        ));
        assert!(matches!(
            Manifest::parse(Some("image/png"), image("").as_bytes()),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        // Body and header disagree.
        assert!(matches!(Manifest::parse(Some(OCI_INDEX), image("").as_bytes()), Err(ManifestError::Invalid(_))));
        // Missing config.
        let no_config = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert!(matches!(Manifest::parse(Some(OCI_MANIFEST), no_config.as_bytes()), Err(ManifestError::Invalid(_))));
        // Bad digest inside.
        let bad = image("").replace(D2, "sha256:nothex");
        assert!(matches!(Manifest::parse(Some(OCI_MANIFEST), bad.as_bytes()), Err(ManifestError::Invalid(_))));
        let neg = image("").replace("\"size\":3", "\"size\":-3");
        assert!(matches!(Manifest::parse(Some(OCI_MANIFEST), neg.as_bytes()), Err(ManifestError::Invalid(_))));
    }
}
