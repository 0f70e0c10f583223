//! Registry operations and checks driven through pier's HTTP API (raw requests) and through
//! skopeo: pushing blobs, manifests and images, and asserting an image is served byte for byte.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::command::{output, run_logged};
use super::daemon::Pier;
use super::http::{range_len, strip_origin, with_digest, Response};
use super::image::*;

/// Starts an upload session; returns the Location path (origin stripped).
#[track_caller]
pub fn start_upload(p: &Pier, repo: &str) -> String {
    let r = p.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202, "POST upload in {repo}: {}\n{}", r.text(), p.log_tail());
    strip_origin(r.header("location").expect("Location on POST"))
}

/// Pushes a blob with the monolithic POST-then-PUT flow; asserts 201 and returns the digest.
#[track_caller]
pub fn push_blob(p: &Pier, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let loc = start_upload(p, repo);
    let r = p.req("PUT", &with_digest(&loc, &digest), &[("Content-Type", "application/octet-stream")], data);
    assert_eq!(r.status, 201, "PUT blob {digest} in {repo}: {}\n{}", r.text(), p.log_tail());
    digest
}

/// One PATCH of `data[range]` to `loc`; asserts 202 with the whole prefix held; returns the
/// next location.
#[track_caller]
pub fn patch(p: &Pier, loc: &str, data: &[u8], range: Range<usize>) -> String {
    let cr = format!("{}-{}", range.start, range.end - 1);
    let r = p.req(
        "PATCH",
        loc,
        &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)],
        &data[range.clone()],
    );
    assert_eq!(r.status, 202, "PATCH {cr}: {}\n{}", r.text(), p.log_tail());
    assert_eq!(range_len(&r), range.end as u64, "Range after PATCH {cr}");
    r.header("location").map(strip_origin).unwrap_or_else(|| loc.to_string())
}

/// Pushes a manifest; asserts 201 and returns its digest.
#[track_caller]
pub fn push_manifest(p: &Pier, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let r = p.req("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", media_type)], body);
    assert_eq!(r.status, 201, "PUT manifest {repo}:{reference}: {}\n{}", r.text(), p.log_tail());
    sha256_digest(body)
}

/// Pushes config, layers and manifest of `img` as `repo:tag` over raw HTTP; checks the digest
/// pier answers.
#[track_caller]
pub fn push_image_raw(p: &Pier, repo: &str, tag: &str, img: &Image) {
    for b in img.blobs() {
        push_blob(p, repo, b);
    }
    let r = p.req("PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Content-Type", OCI_MANIFEST)], &img.manifest);
    assert_eq!(r.status, 201, "PUT manifest {repo}:{tag}: {}\n{}", r.text(), p.log_tail());
    assert_eq!(r.header("docker-content-digest"), Some(img.digest().as_str()), "digest of {repo}:{tag}");
}

/// Pushes a config + the given layers + a manifest tagged `tag`; returns the manifest digest.
pub fn push_image(p: &Pier, repo: &str, tag: &str, layers: &[&[u8]]) -> String {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").into_bytes();
    let cd = push_blob(p, repo, &config);
    let mut ls = Vec::new();
    for l in layers {
        ls.push((push_blob(p, repo, l), l.len()));
    }
    let refs: Vec<(&str, usize)> = ls.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let m = image_manifest((&cd, config.len()), &refs);
    push_manifest(p, repo, tag, "application/vnd.oci.image.manifest.v1+json", &m)
}

// ---------------------------------------------------------------------------------------------
// Running the clients

/// Runs skopeo and returns its raw output (for commands that are expected to fail).
pub fn skopeo_output(args: &[&str]) -> Output {
    output(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// skopeo against pier, with the daemon log in the panic message.
pub fn skopeo_p(p: &Pier, args: &[&str]) -> String {
    run_logged(p, Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// Where containers/image keeps its blob-info cache when run as root (the tests run as root).
const BLOB_INFO_CACHE_DIR: &str = "/var/lib/containers/cache";

/// A blob-info cache of one test's own. Whether skopeo asks for a cross-repository mount depends
/// on what this cache remembers; the machine-wide one is shared by every skopeo and podman that
/// runs in parallel, and under load a record can be lost to that contention. Each command runs in
/// a private mount namespace (`unshare`) with the test's directory bound over the cache path.
pub struct PrivateBlobInfoCache {
    dir: tempfile::TempDir,
}

impl PrivateBlobInfoCache {
    pub fn new() -> PrivateBlobInfoCache {
        std::fs::create_dir_all(BLOB_INFO_CACHE_DIR).expect("create the blob-info cache mount point");
        PrivateBlobInfoCache { dir: tmpdir() }
    }

    /// `skopeo --insecure-policy ARGS...`, seeing only this cache.
    pub fn skopeo(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("mount --bind \"$0\" {BLOB_INFO_CACHE_DIR} && exec skopeo --insecure-policy \"$@\""))
            .arg(self.dir.path())
            .args(args);
        cmd
    }
}

/// `skopeo copy --preserve-digests oci:DIR:TAG docker://HOST/REPO:TAG`.
pub fn skopeo_push(p: &Pier, dir: &Path, tag: &str, repo_tag: &str) {
    let src = format!("oci:{}:{tag}", dir.display());
    let dst = format!("docker://{}/{repo_tag}", p.host());
    skopeo_p(p, &["copy", "--preserve-digests", "--dest-tls-verify=false", &src, &dst]);
}

/// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://HOST/REPO:TAG` (an index and all
/// its platforms).
pub fn skopeo_push_all(p: &Pier, dir: &Path, tag: &str, repo_tag: &str) {
    let src = format!("oci:{}:{tag}", dir.display());
    let dst = format!("docker://{}/{repo_tag}", p.host());
    skopeo_p(p, &["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &src, &dst]);
}

/// Pushes `img` as `repo:tag` with skopeo from a freshly written OCI layout.
pub fn push_with_skopeo(p: &Pier, repo: &str, tag: &str, img: &Image) {
    let src = tmpdir();
    write_image_layout(src.path(), tag, img);
    skopeo_push(p, src.path(), tag, &format!("{repo}:{tag}"));
}

/// Pulls `repo:tag` with skopeo and compares every byte with `img`; also checks raw GETs.
pub fn assert_pulls_identical(p: &Pier, repo: &str, tag: &str, img: &Image) {
    assert_image_served(p, repo, tag, img);
    let dst = tmpdir();
    skopeo_pull(p, &format!("{repo}:{tag}"), dst.path(), tag).assert_has_image(tag, img);
}

/// `skopeo copy --preserve-digests docker://HOST/REPO:TAG oci:DIR:TAG`, then reads the layout.
pub fn skopeo_pull(p: &Pier, repo_ref: &str, dir: &Path, tag: &str) -> Layout {
    let src = format!("docker://{}/{repo_ref}", p.host());
    let dst = format!("oci:{}:{tag}", dir.display());
    skopeo_p(p, &["copy", "--preserve-digests", "--src-tls-verify=false", &src, &dst]);
    read_layout(dir)
}

// ---------------------------------------------------------------------------------------------
// Talking to pier directly

/// GET a manifest with an Accept header listing every manifest type.
pub fn get_manifest(p: &Pier, repo: &str, reference: &str) -> Response {
    p.req("GET", &format!("/v2/{repo}/manifests/{reference}"), &[("Accept", ACCEPT_ALL)], b"")
}

/// Asserts `repo:tag` serves `img` byte for byte: the manifest (with its digest header and media
/// type) and every blob, fetched with plain GETs.
pub fn assert_image_served(p: &Pier, repo: &str, tag: &str, img: &Image) {
    let r = get_manifest(p, repo, tag);
    assert_eq!(r.status, 200, "GET manifest {repo}:{tag}: {}\n{}", r.text(), p.log_tail());
    assert_eq!(r.text(), String::from_utf8_lossy(&img.manifest), "manifest bytes of {repo}:{tag}");
    assert_eq!(r.header("docker-content-digest"), Some(img.digest().as_str()), "Docker-Content-Digest of {repo}:{tag}");
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST), "Content-Type of {repo}:{tag}");
    assert_blobs_served(p, repo, img);
}

/// Asserts every blob of `img` (and its manifest by digest) is served by `repo` byte for byte.
pub fn assert_blobs_served(p: &Pier, repo: &str, img: &Image) {
    let r = get_manifest(p, repo, &img.digest());
    assert_eq!(r.status, 200, "GET manifest {repo}@{}: {}", img.digest(), r.text());
    assert!(r.body == img.manifest, "manifest {repo}@{} differs", img.digest());
    for b in img.blobs() {
        let d = sha256_digest(b);
        let r = p.get(&format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(r.status, 200, "GET blob {repo}@{d}: {}\n{}", r.text(), p.log_tail());
        assert_eq!(r.body.len(), b.len(), "length of blob {repo}@{d}");
        assert!(r.body == b, "content of blob {repo}@{d} differs");
    }
}

/// Asserts `repo:tag` serves `img`, fetched by tag and by digest, and every blob byte for byte.
#[track_caller]
pub fn assert_image(p: &Pier, repo: &str, tag: &str, img: &Image) {
    for reference in [tag.to_string(), img.digest()] {
        let r = get_manifest(p, repo, &reference);
        assert_eq!(r.status, 200, "GET manifest {repo}:{reference}: {}\n{}", r.text(), p.log_tail());
        assert!(r.body == img.manifest, "manifest {repo}:{reference} differs from what was pushed");
        assert_eq!(r.header("docker-content-digest"), Some(img.digest().as_str()), "{repo}:{reference}");
    }
    assert_blobs_served(p, repo, img);
}

/// The tags of `repo` and the manifest digests they name, as the API serves them.
fn served_tags(p: &Pier, repo: &str) -> BTreeMap<String, String> {
    let r = p.get(&format!("/v2/{repo}/tags/list"));
    if r.status == 404 {
        return BTreeMap::new();
    }
    assert_eq!(r.status, 200, "GET /v2/{repo}/tags/list: {}", r.text());
    let tags: Vec<String> = r.json()["tags"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect());
    tags.into_iter()
        .map(|t| {
            let m = get_manifest(p, repo, &t);
            assert_eq!(m.status, 200, "GET manifest {repo}:{t}: {}", m.text());
            let d = m.header("docker-content-digest").expect("Docker-Content-Digest").to_string();
            (t, d)
        })
        .collect()
}

/// The tags in a layout's `index.json` and the digests they name.
fn layout_tags(layout: &Layout) -> BTreeMap<String, String> {
    layout.index["manifests"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|m| {
            let tag = m["annotations"][REF_NAME].as_str()?;
            Some((tag.to_string(), m["digest"].as_str()?.to_string()))
        })
        .collect()
}

/// pier's on-disk layout of `repo` once its `index.json` has caught up with the registry: pier
/// writes `index.json` off the request path, within a second of a change, so a test that reads
/// it right after a push waits here (up to 2 s) until the tags in `index.json`, and the digests
/// they name, are exactly those the API serves.
#[track_caller]
pub fn settled_layout(p: &Pier, repo: &str) -> Layout {
    let dir = p.root.join("repositories").join(repo);
    let want = served_tags(p, repo);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let layout = read_layout(&dir);
        let found = layout_tags(&layout);
        if found == want {
            return layout;
        }
        assert!(
            Instant::now() < deadline,
            "{}/index.json did not catch up with the registry within 2 s:\n on disk: {found:?}\n served: {want:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads pier's on-disk layout of `repo` while the daemon runs (once `index.json` caught up, see
/// [`settled_layout`]): checks it directly (oci-layout, index.json tags, every blob hashing to
/// its name) and copies `tag` out of it with skopeo (`--all` for an index); returns the copied
/// layout.
pub fn disk_layout_copy(p: &Pier, repo: &str, tag: &str, all: bool) -> (Layout, tempfile::TempDir) {
    let repo_dir = p.root.join("repositories").join(repo);
    let direct = settled_layout(p, repo);
    assert!(
        direct.tags().contains(&tag.to_string()),
        "tag {tag} missing from {}/index.json: {}",
        repo_dir.display(),
        direct.index
    );
    let out = tmpdir();
    let src = format!("oci:{}:{tag}", repo_dir.display());
    let dst = format!("oci:{}:{tag}", out.path().display());
    let mut args = vec!["copy", "--preserve-digests"];
    if all {
        args.push("--all");
    }
    args.push(&src);
    args.push(&dst);
    skopeo_p(p, &args);
    (read_layout(out.path()), out)
}
