//! The image names archives carry, made into pier's repositories and tags: OCI
//! `index.json` annotations (`io.pier.repository`/`io.pier.tag`, `io.containerd.image.name`,
//! `org.opencontainers.image.ref.name`) and docker save's `RepoTags`.
//!
//! A name may be a bare tag (`3.20`, what `skopeo copy … oci-archive:FILE:3.20` writes), a
//! repository and tag (`alpine:3.20`), or a full reference with a registry host
//! (`docker.io/library/alpine:3.20`, `localhost:5000/team/app:1`). The host is not part of
//! a repository in pier (the site's pier is the host now): it is dropped, and so is Docker
//! Hub's `library/` with it, so that a name reads as Docker's familiar form (`alpine`), the
//! form `docker save` writes in `RepoTags`. A `@digest` suffix is ignored (the descriptor's
//! digest is what counts). Validation is the caller's (`RepoName::parse`, `Tag::parse`).

use std::collections::BTreeMap;

/// Annotations pier's own export writes (exact names, no parsing).
pub const PIER_REPOSITORY: &str = "io.pier.repository";
pub const PIER_TAG: &str = "io.pier.tag";
/// containerd's and docker's full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI layout's reference name: a tag, or a full reference.
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A repository (when the name has one) and a tag (when it has one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveName {
    pub repository: Option<String>,
    pub tag: Option<String>,
}

/// The name an `index.json` descriptor's annotations give.
pub fn from_annotations(annotations: &BTreeMap<String, String>) -> ArchiveName {
    if let Some(repo) = annotations.get(PIER_REPOSITORY) {
        return ArchiveName { repository: Some(repo.clone()), tag: annotations.get(PIER_TAG).cloned() };
    }
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        return parse_reference(full);
    }
    match annotations.get(OCI_REF_NAME) {
        // A bare tag has neither a path separator nor a tag separator.
        Some(name) if !name.contains('/') && !name.contains(':') && !name.contains('@') => {
            ArchiveName { repository: None, tag: Some(name.clone()) }
        }
        Some(name) => parse_reference(name),
        None => ArchiveName::default(),
    }
}

/// `[host/]path[:tag][@digest]` as repository (host and Docker Hub's `library/` dropped) and tag.
pub fn parse_reference(reference: &str) -> ArchiveName {
    let without_digest = reference.split('@').next().unwrap_or("");
    let last_slash = without_digest.rfind('/');
    let (path, tag) = match without_digest.rfind(':') {
        Some(colon) if last_slash.map_or(true, |s| colon > s) => {
            (&without_digest[..colon], Some(without_digest[colon + 1..].to_string()))
        }
        _ => (without_digest, None),
    };
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let hub = matches!(first, "docker.io" | "index.docker.io" | "registry-1.docker.io");
            parts.remove(0);
            if hub && parts.len() > 1 && parts[0] == "library" {
                parts.remove(0);
            }
        }
    }
    let repository = parts.join("/");
    ArchiveName { repository: (!repository.is_empty()).then_some(repository), tag }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(repo: Option<&str>, tag: Option<&str>) -> ArchiveName {
        ArchiveName { repository: repo.map(String::from), tag: tag.map(String::from) }
    }

    #[test]
    fn references_become_familiar_repositories_and_tags() {
        assert_eq!(parse_reference("alpine:3.20"), name(Some("alpine"), Some("3.20")));
        assert_eq!(parse_reference("docker.io/library/alpine:3.20"), name(Some("alpine"), Some("3.20")));
        assert_eq!(parse_reference("docker.io/team/app:1"), name(Some("team/app"), Some("1")));
        assert_eq!(parse_reference("localhost:5000/team/app:1"), name(Some("team/app"), Some("1")));
        assert_eq!(parse_reference("127.0.0.1:5000/app"), name(Some("app"), None));
        assert_eq!(parse_reference("quay.io/x/y@sha256:abc"), name(Some("x/y"), None));
        assert_eq!(parse_reference("team/app:1@sha256:abc"), name(Some("team/app"), Some("1")));
        let mut a = BTreeMap::new();
        a.insert(OCI_REF_NAME.to_string(), "3.20".to_string());
        assert_eq!(from_annotations(&a), name(None, Some("3.20")));
        a.insert(CONTAINERD_NAME.to_string(), "docker.io/library/alpine:3.20".to_string());
        assert_eq!(from_annotations(&a), name(Some("alpine"), Some("3.20")));
        a.insert(PIER_REPOSITORY.to_string(), "library/alpine".to_string());
        assert_eq!(from_annotations(&a), name(Some("library/alpine"), None));
    }
}
