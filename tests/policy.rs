//! The registry policy (deletion, read-only mode, digest algorithms) against the real binary:
//! manifests addressed by a digest obey the accepted algorithms like blobs do, and the policy
//! follows SIGHUP except for the algorithms, which need a restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use pier::core::{Algorithm, Digest};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes a config and a layer to `repo` and returns a manifest referencing them.
fn manifest_in(p: &Pier, repo: &str) -> Vec<u8> {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"policy layer";
    let (cd, ld) = (push_blob(p, repo, config), push_blob(p, repo, layer));
    image_manifest((&cd, config.len()), &[(&ld, layer.len())])
}

#[track_caller]
fn assert_blake3_refused(r: &Response, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", show(r));
    assert_eq!(r.error_code(), "DIGEST_INVALID", "{what}");
    let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("storage.digests.blake3"), "{what}: the message names the setting: {message:?}");
}

/// A `blake3:` manifest reference used to be accepted with `storage.digests.blake3` off.
#[test]
fn manifest_references_obey_the_digest_algorithms() {
    let off = Pier::start();
    let m = manifest_in(&off, "r");
    let d = Digest::of(Algorithm::Blake3, &m).to_string();
    let path = format!("/v2/r/manifests/{d}");
    assert_blake3_refused(&off.req("PUT", &path, &[("Content-Type", OCI_MANIFEST)], &m), "PUT by blake3 digest");
    assert_blake3_refused(&off.get(&path), "GET by blake3 digest");
    assert_eq!(off.req("HEAD", &path, &[], b"").status, 400, "HEAD by blake3 digest");
    assert_blake3_refused(&off.req("DELETE", &path, &[], b""), "DELETE by blake3 digest");
    // Nothing was stored under any digest.
    assert_eq!(off.get(&format!("/v2/r/manifests/{}", sha256_digest(&m))).status, 404);
    assert!(files_under(&off.root.join("blobs/blake3")).is_empty(), "a blake3 file was stored");
    // sha256 and sha512 references are accepted as before.
    let sha512 = sha512_digest(&m);
    let r = off.req("PUT", &format!("/v2/r/manifests/{sha512}"), &[("Content-Type", OCI_MANIFEST)], &m);
    assert_eq!(r.status, 201, "PUT by sha512 digest: {}", show(&r));

    let on = Pier::start_with(Options {
        delete_enabled: true,
        env: vec![("REGISTRY_STORAGE_DIGESTS_BLAKE3".into(), "true".into())],
        ..Default::default()
    });
    let m = manifest_in(&on, "r");
    let d = Digest::of(Algorithm::Blake3, &m).to_string();
    let path = format!("/v2/r/manifests/{d}");
    let r = on.req("PUT", &path, &[("Content-Type", OCI_MANIFEST)], &m);
    assert_eq!(r.status, 201, "PUT by blake3 digest with blake3 on: {}", show(&r));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = on.get(&path);
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.body, m);
    assert_eq!(on.req("DELETE", &path, &[], b"").status, 202);
    assert_eq!(on.get(&path).status, 404);
}

/// Deletion and read-only mode follow SIGHUP; the accepted algorithms do not (they need a
/// restart, and the reload says so).
#[test]
fn policy_follows_sighup_except_the_algorithms() {
    let p = Pier::start_with(Options::default());
    let original = std::fs::read_to_string(&p.config).unwrap();
    let hup = || {
        let pid = p.child.as_ref().unwrap().id().to_string();
        run(Command::new("kill").args(["-HUP", &pid]));
    };
    let d = push_blob(&p, "r", b"deletable");
    let blob = format!("/v2/r/blobs/{d}");
    let r = p.req("DELETE", &blob, &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"), "{}", show(&r));
    let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("storage.delete.enabled"), "{message:?}");
    let blake3 = format!("/v2/r/blobs/uploads/?digest={}", Digest::of(Algorithm::Blake3, b"x"));

    let reloaded = original
        .replace("  delete:\n    enabled: false\n", "  delete:\n    enabled: true\n  digests:\n    blake3: true\n");
    assert_ne!(reloaded, original, "the generated config changed shape");
    std::fs::write(&p.config, reloaded).unwrap();
    hup();
    assert!(
        wait_until(Duration::from_secs(10), || p.log().contains("storage.digests.blake3")),
        "the algorithm change is not reported as needing a restart: {}",
        p.log()
    );
    assert_eq!(p.req("DELETE", &blob, &[], b"").status, 202, "deletion enabled by SIGHUP");
    assert_eq!(p.get(&blob).status, 404);
    assert_blake3_refused(&p.req("POST", &blake3, &[], b"x"), "blake3 after a reload (needs a restart)");

    let read_only = original.replace("storage:\n", "storage:\n  maintenance:\n    readonly:\n      enabled: true\n");
    std::fs::write(&p.config, read_only).unwrap();
    hup();
    assert!(
        wait_until(Duration::from_secs(10), || p.req("POST", "/v2/r/blobs/uploads/", &[], b"").status == 405),
        "read-only mode not applied: {}",
        p.log()
    );
    // Deletion is off again too, but read-only mode is the refusal given.
    let r = p.req("DELETE", &blob, &[], b"");
    let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("read-only"), "read-only mode comes before deletion: {message:?}");
}
