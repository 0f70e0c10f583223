//! Manifests and indexes (`core::manifest`). Input: the `Content-Type` on the first line (an
//! empty line: none), the body on the rest. Parsing never panics; an accepted manifest is of a
//! known media type (the header's, when the header names one), has the shape of its kind, only
//! non-distributable layers with URLs left out of its blobs, and every descriptor holds a digest
//! that re-parses equal; the image index pier would write of its
//! descriptors (as in `index.json`) is itself accepted and yields them back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::manifest::{
    is_non_distributable, ImageIndex, Manifest, ManifestKind, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX,
    OCI_MANIFEST,
};
use pier::core::{Descriptor, Digest};
use pier_fuzz::first_line;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = first_line(data);
    let Ok(content_type) = std::str::from_utf8(content_type) else { return };
    let content_type = (!content_type.is_empty()).then_some(content_type);
    let Ok(m) = Manifest::parse(content_type, body) else { return };

    let kind = match m.media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
        OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => panic!("accepted an unknown media type {other:?}"),
    };
    assert_eq!(m.kind, kind);
    if let Some(ct) = content_type.and_then(|c| c.split(';').next()).map(str::trim) {
        if kind_of(ct).is_some() {
            assert_eq!(m.media_type, ct, "the Content-Type names the type");
        }
    }
    match m.kind {
        ManifestKind::Image => assert!(!m.blobs.is_empty() && m.children.is_empty(), "an image has a config"),
        ManifestKind::Index => assert!(m.blobs.is_empty()),
    }
    // Layers that need not be in the registry are non-distributable ones that name URLs.
    assert!(m.external.iter().all(|d| is_non_distributable(&d.media_type)));
    assert!(m.external.is_empty() || !m.urls.is_empty());
    for d in m.blobs.iter().chain(&m.children).chain(&m.subject).chain(&m.external) {
        assert_eq!(Digest::parse(d.digest.as_str()).as_ref(), Ok(&d.digest));
        assert!(d.size <= i64::MAX as u64);
    }

    // What pier writes of these descriptors is a manifest pier reads back to the same ones.
    let written = serde_json::to_vec(&ImageIndex::new(m.children.clone())).expect("an index serialises");
    let read = Manifest::parse(Some(OCI_INDEX), &written).expect("pier reads the index it writes");
    assert_eq!(read.kind, ManifestKind::Index);
    assert_eq!(strip(&read.children), strip(&m.children));
});

fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

fn strip(descriptors: &[Descriptor]) -> Vec<(&str, &str, u64)> {
    descriptors.iter().map(|d| (d.media_type.as_str(), d.digest.as_str(), d.size)).collect()
}
