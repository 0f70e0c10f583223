//! End-to-end: the ORAS Python SDK (`pip install oras`) against a real pier daemon.
//!
//! `oras_push.py` (next to this file) pushes an artifact, then referrers whose manifests carry `subject`
//! (one built by hand with `artifactType`, uploaded with the SDK's upload_blob/upload_manifest;
//! one pushed with the SDK's own `push(subject=…)`, whose artifact type is its config media type),
//! and pulls artifacts back. The referrers API is then checked from Rust over plain HTTP.

use crate::harness::*;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const SBOM_TYPE: &str = "application/vnd.example.sbom";
const SIG_TYPE: &str = "application/vnd.example.signature";

/// Runs `python3 tests/it/e2e/oras_push.py ARGS` (python3 with `pip install oras`; .ci/run
/// installs it), asserting success; returns the JSON it prints last.
fn oras(p: &Pier, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/e2e/oras_push.py");
    let stdout = run_logged(p, Command::new("python3").arg(&script).args(args));
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("oras_push.py {args:?} printed no JSON ({e}): {stdout}"))
}

/// `oras_push.py MODE HOST REPO:TAG FILE TYPE DIGEST SIZE MEDIA_TYPE`: pushes `file` as an
/// artifact of `artifact_type` whose subject is `(digest, size, media type)`; MODE is
/// `push-referrer` or `push-subject`.
fn oras_attach(
    p: &Pier,
    mode: &str,
    repo_tag: &str,
    file: &Path,
    artifact_type: &str,
    subject: (&str, usize, &str),
) -> Value {
    let (digest, size, media_type) = subject;
    let size = size.to_string();
    oras(p, &[mode, &p.host(), repo_tag, file.to_str().unwrap(), artifact_type, digest, &size, media_type])
}

fn referrers(p: &Pier, repo: &str, digest: &str, query: &str) -> Response {
    let r = p.get(&format!("/v2/{repo}/referrers/{digest}{query}"));
    assert_eq!(r.status, 200, "GET referrers of {digest}{query}: {}\n{}", r.text(), p.log_tail());
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with(OCI_INDEX)),
        "referrers Content-Type: {:?}",
        r.header("content-type")
    );
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2, "{v}");
    assert_eq!(v["mediaType"], OCI_INDEX, "{v}");
    assert!(v["manifests"].is_array(), "referrers index has a manifests array: {v}");
    r
}

/// `(digest, descriptor)` of each referrer listed.
fn listed(r: &Response) -> Vec<(String, Value)> {
    r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["digest"].as_str().unwrap_or("").to_string(), d.clone()))
        .collect()
}

/// GETs a manifest and returns its bytes, checking its digest header.
fn manifest_bytes(p: &Pier, repo: &str, reference: &str) -> Vec<u8> {
    let r = get_manifest(p, repo, reference);
    assert_eq!(r.status, 200, "GET manifest {repo}:{reference}: {}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(sha256_digest(&r.body).as_str()),
        "digest header of {reference}"
    );
    r.body
}

#[test]
fn oras_push_artifact_referrers_and_pull() {
    let mut p = Pier::start();
    let host = p.host();
    let repo = "e2e/artifact";
    let work = tmpdir();

    // 1. The subject: a plain artifact with one file.
    let payload = [format!("pier e2e artifact {}\n", nonce()).into_bytes(), random_bytes(300_000, 31)].concat();
    let file = work.path().join("payload.bin");
    std::fs::write(&file, &payload).unwrap();
    let out = oras(&p, &["push", &host, &format!("{repo}:v1"), file.to_str().unwrap()]);
    assert_eq!(out["status"], 201, "manifest PUT status: {out}");
    let subject_bytes = manifest_bytes(&p, repo, "v1");
    let subject_digest = sha256_digest(&subject_bytes);
    assert_eq!(out["digest"], subject_digest.as_str(), "{out}");
    let sm: Value = serde_json::from_slice(&subject_bytes).unwrap();
    assert_eq!(sm["layers"][0]["digest"], sha256_digest(&payload));
    assert_eq!(sm["layers"][0]["annotations"]["org.opencontainers.image.title"], "payload.bin");
    let blob = p.get(&format!("/v2/{repo}/blobs/{}", sha256_digest(&payload)));
    assert_eq!(blob.status, 200);
    assert!(blob.body == payload, "payload blob bytes");

    // Nothing refers to it yet.
    assert!(listed(&referrers(&p, repo, &subject_digest, "")).is_empty(), "no referrers before any were pushed");

    // 2. An SBOM whose manifest has artifactType + subject (SDK blob uploads + upload_manifest).
    let sbom = format!("{{\"spdxVersion\":\"SPDX-2.3\",\"name\":\"{}\"}}\n", nonce()).into_bytes();
    let sbom_file = work.path().join("sbom.spdx.json");
    std::fs::write(&sbom_file, &sbom).unwrap();
    let out = oras_attach(
        &p,
        "push-referrer",
        &format!("{repo}:sbom"),
        &sbom_file,
        SBOM_TYPE,
        (&subject_digest, subject_bytes.len(), OCI_MANIFEST),
    );
    assert_eq!(out["status"], 201, "{out}");
    assert_eq!(out["oci_subject"], subject_digest.as_str(), "OCI-Subject header on a manifest PUT with subject: {out}");
    let sbom_manifest = manifest_bytes(&p, repo, "sbom");
    let sbom_digest = sha256_digest(&sbom_manifest);
    assert_eq!(out["digest"], sbom_digest.as_str(), "{out}");
    assert_eq!(out["sent_digest"], sbom_digest.as_str(), "pier stores the manifest bytes as sent: {out}");

    // 3. A signature pushed with the SDK's push(subject=...): artifactType comes from config.mediaType.
    let sig = format!("signature {}\n", nonce()).into_bytes();
    let sig_file = work.path().join("artifact.sig");
    std::fs::write(&sig_file, &sig).unwrap();
    let out = oras_attach(
        &p,
        "push-subject",
        &format!("{repo}:sig"),
        &sig_file,
        SIG_TYPE,
        (&subject_digest, subject_bytes.len(), OCI_MANIFEST),
    );
    assert_eq!(out["status"], 201, "{out}");
    assert_eq!(out["oci_subject"], subject_digest.as_str(), "OCI-Subject header: {out}");
    let sig_manifest = manifest_bytes(&p, repo, "sig");
    let sig_digest = sha256_digest(&sig_manifest);

    // 4. The referrers API lists both, with their artifact types, sizes and annotations.
    let check_referrers = |p: &Pier| {
        let r = referrers(p, repo, &subject_digest, "");
        let l = listed(&r);
        let mut digests: Vec<&str> = l.iter().map(|(d, _)| d.as_str()).collect();
        digests.sort();
        let mut want = vec![sbom_digest.as_str(), sig_digest.as_str()];
        want.sort();
        assert_eq!(digests, want, "referrers of {subject_digest}: {}", r.text());
        for (d, desc) in &l {
            let (ty, bytes) = if *d == sbom_digest { (SBOM_TYPE, &sbom_manifest) } else { (SIG_TYPE, &sig_manifest) };
            assert_eq!(desc["artifactType"], ty, "artifactType of {d}: {desc}");
            assert_eq!(desc["mediaType"], OCI_MANIFEST, "{desc}");
            assert_eq!(desc["size"].as_u64(), Some(bytes.len() as u64), "{desc}");
            if *d == sbom_digest {
                assert_eq!(
                    desc["annotations"]["org.example.sbom.format"], "spdx",
                    "manifest annotations are carried: {desc}"
                );
            }
        }
    };
    check_referrers(&p);

    // Filtering by artifactType: if the server says it filtered, only the SBOM is listed.
    let r = referrers(&p, repo, &subject_digest, &format!("?artifactType={SBOM_TYPE}"));
    let l = listed(&r);
    if r.header("oci-filters-applied").is_some_and(|h| h.contains("artifactType")) {
        assert_eq!(l.len(), 1, "filtered referrers: {}", r.text());
        assert_eq!(l[0].0, sbom_digest);
    } else {
        assert_eq!(l.len(), 2, "unfiltered referrers: {}", r.text());
    }

    // Unknown subject → 200 with an empty list; a referrer itself has no referrers.
    let unknown = sha256_digest(b"nobody refers to this");
    assert!(listed(&referrers(&p, repo, &unknown, "")).is_empty());
    assert!(listed(&referrers(&p, repo, &sbom_digest, "")).is_empty());

    // 5. oras pull gives back the original files.
    let pull_dir = work.path().join("pulled");
    std::fs::create_dir_all(&pull_dir).unwrap();
    let out = oras(&p, &["pull", &host, &format!("{repo}:v1"), pull_dir.to_str().unwrap()]);
    assert_eq!(out["files"].as_array().map(|a| a.len()), Some(1), "{out}");
    assert!(std::fs::read(pull_dir.join("payload.bin")).unwrap() == payload, "pulled payload bytes");
    let sbom_dir = work.path().join("pulled-sbom");
    std::fs::create_dir_all(&sbom_dir).unwrap();
    oras(&p, &["pull", &host, &format!("{repo}@{sbom_digest}"), sbom_dir.to_str().unwrap()]);
    assert!(std::fs::read(sbom_dir.join("sbom.spdx.json")).unwrap() == sbom, "pulled SBOM bytes");

    // 6. Everything survives a restart.
    p.kill9();
    p.restart();
    check_referrers(&p);
    let again = work.path().join("pulled-again");
    std::fs::create_dir_all(&again).unwrap();
    oras(&p, &["pull", &p.host(), &format!("{repo}:v1"), again.to_str().unwrap()]);
    assert!(std::fs::read(again.join("payload.bin")).unwrap() == payload, "pulled payload after restart");

    // 7. Deleting a referrer removes it from the list.
    let r = p.req("DELETE", &format!("/v2/{repo}/manifests/{sig_digest}"), &[], b"");
    assert_eq!(r.status, 202, "DELETE referrer manifest: {}", r.text());
    let l = listed(&referrers(&p, repo, &subject_digest, ""));
    assert_eq!(
        l.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        [sbom_digest.as_str()],
        "referrers after deleting the signature"
    );
}

#[test]
fn oras_referrer_pushed_before_its_subject() {
    let p = Pier::start();
    let repo = "e2e/early-referrer";
    let work = tmpdir();
    // A subject manifest that is not pushed yet (its digest is known in advance).
    let subject = Image::new("early", "amd64", &[10_000], 41);
    let sig = format!("early signature {}\n", nonce()).into_bytes();
    let sig_file = work.path().join("early.sig");
    std::fs::write(&sig_file, &sig).unwrap();
    let out = oras_attach(
        &p,
        "push-subject",
        &format!("{repo}:sig"),
        &sig_file,
        SIG_TYPE,
        (&subject.digest(), subject.manifest.len(), OCI_MANIFEST),
    );
    assert_eq!(out["status"], 201, "a manifest whose subject does not exist yet must be accepted: {out}");
    let sig_digest = sha256_digest(&manifest_bytes(&p, repo, "sig"));

    let l = listed(&referrers(&p, repo, &subject.digest(), ""));
    assert_eq!(l.len(), 1, "referrer of a not-yet-pushed subject");
    assert_eq!(l[0].0, sig_digest);
    assert_eq!(l[0].1["artifactType"], SIG_TYPE);

    // Now push the subject itself: the referrer is still listed, and the image is complete.
    for b in subject.blobs() {
        push_blob(&p, repo, b);
    }
    push_manifest(&p, repo, "v1", OCI_MANIFEST, &subject.manifest);
    assert_image_served(&p, repo, "v1", &subject);
    let l = listed(&referrers(&p, repo, &subject.digest(), ""));
    assert_eq!(l.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(), [sig_digest]);
}

#[test]
fn oras_chunked_push_and_pull() {
    let p = Pier::start();
    let host = p.host();
    let repo = "e2e/chunked";
    let work = tmpdir();
    // 5 MiB + a bit, in 1 MiB PATCHes (the last chunk is short).
    let payload = [format!("chunked {}\n", nonce()).into_bytes(), random_bytes((5 << 20) + 12_345, 51)].concat();
    let file = work.path().join("big.bin");
    std::fs::write(&file, &payload).unwrap();
    let out = oras(&p, &["push-chunked", &host, &format!("{repo}:v1"), file.to_str().unwrap(), &(1 << 20).to_string()]);
    assert_eq!(out["status"], 201, "{out}");
    let m: Value = serde_json::from_slice(&manifest_bytes(&p, repo, "v1")).unwrap();
    let d = sha256_digest(&payload);
    assert_eq!(m["layers"][0]["digest"], d.as_str());
    assert_eq!(m["layers"][0]["size"].as_u64(), Some(payload.len() as u64));
    let r = p.get(&format!("/v2/{repo}/blobs/{d}"));
    assert_eq!(r.status, 200);
    assert!(r.body == payload, "blob assembled from chunks");

    let pull_dir = work.path().join("pulled");
    std::fs::create_dir_all(&pull_dir).unwrap();
    oras(&p, &["pull", &host, &format!("{repo}:v1"), pull_dir.to_str().unwrap()]);
    assert!(std::fs::read(pull_dir.join("big.bin")).unwrap() == payload, "pulled file bytes");
    assert_store_blobs_complete(&p.root);
}

#[test]
fn oras_referrers_of_an_index_and_repo_isolation() {
    let p = Pier::start();
    let host = p.host();
    let repo = "e2e/signed-index";
    let work = tmpdir();
    // A multi-arch index pushed with skopeo.
    let amd = Image::new("si-amd64", "amd64", &[50_000], 42);
    let arm = Image::new("si-arm64", "arm64", &[60_000], 43);
    let src = tmpdir();
    let index = write_index_layout(src.path(), "multi", &[&amd, &arm]);
    skopeo_push_all(&p, src.path(), "multi", &format!("{repo}:multi"));
    let index_digest = sha256_digest(&index);

    // An SBOM attached to the index, and a signature attached to one platform manifest.
    let sbom_file = work.path().join("index.sbom.json");
    std::fs::write(&sbom_file, format!("{{\"sbom\":\"{}\"}}", nonce())).unwrap();
    let out = oras_attach(
        &p,
        "push-referrer",
        &format!("{repo}:index-sbom"),
        &sbom_file,
        SBOM_TYPE,
        (&index_digest, index.len(), OCI_INDEX),
    );
    assert_eq!(out["oci_subject"], index_digest.as_str(), "{out}");
    let sbom_digest = sha256_digest(&manifest_bytes(&p, repo, "index-sbom"));
    let sig_file = work.path().join("arm.sig");
    std::fs::write(&sig_file, format!("sig {}", nonce())).unwrap();
    oras_attach(
        &p,
        "push-subject",
        &format!("{repo}:arm-sig"),
        &sig_file,
        SIG_TYPE,
        (&arm.digest(), arm.manifest.len(), OCI_MANIFEST),
    );
    let sig_digest = sha256_digest(&manifest_bytes(&p, repo, "arm-sig"));

    let l = listed(&referrers(&p, repo, &index_digest, ""));
    assert_eq!(l.len(), 1, "referrers of the index");
    assert_eq!(l[0].0, sbom_digest);
    assert_eq!(l[0].1["artifactType"], SBOM_TYPE);
    let l = listed(&referrers(&p, repo, &arm.digest(), ""));
    assert_eq!(l.len(), 1, "referrers of the arm64 manifest");
    assert_eq!(l[0].0, sig_digest);
    assert!(listed(&referrers(&p, repo, &amd.digest(), "")).is_empty(), "the amd64 manifest has no referrers");

    // The same index in another repository has no referrers there.
    let other = "e2e/signed-index-copy";
    skopeo_p(
        &p,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{host}/{repo}:multi"),
            &format!("docker://{host}/{other}:multi"),
        ],
    );
    assert!(listed(&referrers(&p, other, &index_digest, "")).is_empty(), "referrers are per repository");
    assert!(listed(&referrers(&p, other, &arm.digest(), "")).is_empty(), "referrers are per repository");
}
