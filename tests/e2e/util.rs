//! Helpers for the end-to-end tests that drive real clients (skopeo, podman, the ORAS Python SDK)
//! against a real `pier` daemon. Included by each e2e test file with
//! `#[path = "e2e/util.rs"] mod util;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------------------------------------
// Source images

/// A minimal ustar archive. Names ending in `/` are directories (mode 0755), everything else is
/// a regular file (mode 0644). Good enough for podman/containers-storage to unpack.
pub fn tar_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{:0w$o}\0", v, w = field.len() - 1);
        assert_eq!(s.len(), field.len(), "value {v} does not fit a tar header field");
        field.copy_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    for (name, data) in entries {
        assert!(name.len() < 100, "tar name too long: {name}");
        let is_dir = name.ends_with('/');
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], if is_dir { 0o755 } else { 0o644 });
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], if is_dir { 0 } else { data.len() as u64 });
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = if is_dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        if !is_dir {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Something unique to this process and call, so layer digests never repeat across runs. The
/// containers/image blob-info cache (shared by every skopeo/podman on the machine) remembers
/// where it saw a digest; fresh digests keep one test's history out of another's.
pub fn nonce() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{}-{}", std::process::id(), t, N.fetch_add(1, Ordering::SeqCst))
}

/// A single-platform OCI image held in memory: config, tar layers and the manifest bytes.
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub arch: String,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// One tar layer per entry of `layer_sizes`, each holding a directory, a small text file with
    /// a nonce and a `size`-byte binary file of deterministic random bytes.
    pub fn new(name: &str, arch: &str, layer_sizes: &[usize], seed: u64) -> Image {
        let n = nonce();
        let layers = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let text = format!("image {name} layer {i} nonce {n}\n");
                let bin = random_bytes(size, seed.wrapping_mul(1000).wrapping_add(i as u64));
                tar_archive(&[
                    ("pier-e2e/", b""),
                    (&format!("pier-e2e/{name}-{i}.txt"), text.as_bytes()),
                    (&format!("pier-e2e/{name}-{i}.bin"), &bin),
                ])
            })
            .collect();
        Self::from_layers(name, arch, layers)
    }

    /// An image from ready-made tar layers (e.g. to share a base layer between two images).
    pub fn from_layers(name: &str, arch: &str, layers: Vec<Vec<u8>>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let history: Vec<Value> =
            layers.iter().enumerate().map(|(i, _)| json!({"created_by": format!("pier e2e layer {i}")})).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"pier.e2e.image": name}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }))
        .unwrap();
        let layer_descs: Vec<Value> = layers
            .iter()
            .map(|l| json!({"mediaType": OCI_LAYER_TAR, "digest": sha256_digest(l), "size": l.len()}))
            .collect();
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len()},
            "layers": layer_descs,
            "annotations": {"org.opencontainers.image.description": format!("pier e2e image {name}")},
        }))
        .unwrap();
        Image { name: name.to_string(), arch: arch.to_string(), config, layers, manifest }
    }

    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256_digest(l)).collect()
    }

    /// Config and layers (not the manifest).
    pub fn blobs(&self) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = vec![&self.config];
        v.extend(self.layers.iter().map(|l| l.as_slice()));
        v
    }

    /// This image as an entry of an image index.
    pub fn index_entry(&self) -> Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest(),
            "size": self.manifest.len(),
            "platform": {"architecture": self.arch, "os": "linux"},
        })
    }
}

/// An OCI image index over the given images.
pub fn image_index(images: &[&Image]) -> Vec<u8> {
    let m: Vec<Value> = images.iter().map(|i| i.index_entry()).collect();
    serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": m})).unwrap()
}

/// Writes an OCI image layout: every blob (and every tagged top-level manifest) under
/// `blobs/sha256/`, plus `index.json` naming each `(tag, media type, manifest bytes)`.
pub fn write_layout(dir: &Path, tagged: &[(&str, &str, &[u8])], blobs: &[&[u8]]) {
    let bdir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&bdir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    for (tag, mt, bytes) in tagged {
        manifests.push(json!({
            "mediaType": mt,
            "digest": sha256_digest(bytes),
            "size": bytes.len(),
            "annotations": {REF_NAME: tag},
        }));
    }
    let all = blobs.iter().copied().chain(tagged.iter().map(|t| t.2));
    for b in all {
        let d = sha256_digest(b);
        std::fs::write(bdir.join(d.trim_start_matches("sha256:")), b).unwrap();
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Writes a layout holding one image under `tag`.
pub fn write_image_layout(dir: &Path, tag: &str, img: &Image) {
    write_layout(dir, &[(tag, OCI_MANIFEST, &img.manifest)], &img.blobs());
}

/// Writes a layout holding an index over `images` under `tag` (with every image's manifest,
/// config and layers as blobs); returns the index bytes.
pub fn write_index_layout(dir: &Path, tag: &str, images: &[&Image]) -> Vec<u8> {
    let index = image_index(images);
    let mut blobs: Vec<&[u8]> = images.iter().flat_map(|i| i.blobs()).collect();
    blobs.extend(images.iter().map(|i| i.manifest.as_slice()));
    write_layout(dir, &[(tag, OCI_INDEX, &index)], &blobs);
    index
}

/// One fresh temporary layout per image, each holding it under `tag`.
pub fn image_layout_dirs(images: &[Image], tag: &str) -> Vec<tempfile::TempDir> {
    images
        .iter()
        .map(|img| {
            let d = tmpdir();
            write_image_layout(d.path(), tag, img);
            d
        })
        .collect()
}

/// An OCI image layout read back from disk; every blob's content was checked against its name.
#[derive(Debug)]
pub struct Layout {
    pub index: Value,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

pub fn read_layout(dir: &Path) -> Layout {
    let layout = std::fs::read(dir.join("oci-layout")).unwrap_or_else(|e| panic!("{}/oci-layout: {e}", dir.display()));
    let lv: Value = serde_json::from_slice(&layout).expect("oci-layout is JSON");
    assert_eq!(lv["imageLayoutVersion"], "1.0.0", "{}/oci-layout: {lv}", dir.display());
    let index_bytes =
        std::fs::read(dir.join("index.json")).unwrap_or_else(|e| panic!("{}/index.json: {e}", dir.display()));
    let index: Value = serde_json::from_slice(&index_bytes).expect("index.json is JSON");
    let mut blobs = BTreeMap::new();
    let bdir = dir.join("blobs/sha256");
    if bdir.exists() {
        for e in std::fs::read_dir(&bdir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let data = std::fs::read(e.path()).unwrap();
            let d = format!("sha256:{name}");
            assert_eq!(sha256_digest(&data), d, "blob {} does not match its name", e.path().display());
            blobs.insert(d, data);
        }
    }
    Layout { index, blobs }
}

impl Layout {
    /// `(media type, manifest bytes)` of the manifest tagged `tag` in `index.json`.
    pub fn tagged(&self, tag: &str) -> (String, Vec<u8>) {
        let m = self.index["manifests"]
            .as_array()
            .expect("index.json has manifests")
            .iter()
            .find(|m| m["annotations"][REF_NAME] == tag)
            .unwrap_or_else(|| panic!("no manifest tagged {tag:?} in index.json: {}", self.index));
        let d = m["digest"].as_str().unwrap();
        let bytes = self.blob(d).to_vec();
        assert_eq!(m["size"].as_u64(), Some(bytes.len() as u64), "index.json size of {d}");
        (m["mediaType"].as_str().unwrap_or("").to_string(), bytes)
    }

    pub fn tags(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index["manifests"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["annotations"][REF_NAME].as_str().map(String::from)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn blob(&self, digest: &str) -> &[u8] {
        self.blobs.get(digest).unwrap_or_else(|| {
            panic!("blob {digest} missing from layout (have {:?})", self.blobs.keys().collect::<Vec<_>>())
        })
    }

    /// Asserts `img` is in this layout under `tag`, byte for byte (manifest, config, layers).
    pub fn assert_has_image(&self, tag: &str, img: &Image) {
        let (mt, bytes) = self.tagged(tag);
        assert_eq!(mt, OCI_MANIFEST, "media type of {tag}");
        assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&img.manifest), "manifest bytes of {tag}");
        self.assert_has_blobs(img);
    }

    /// Asserts the image's manifest, config and layers are blobs of this layout, byte for byte.
    pub fn assert_has_blobs(&self, img: &Image) {
        assert!(self.blob(&img.digest()) == img.manifest.as_slice(), "manifest blob of {}", img.name);
        for b in img.blobs() {
            assert!(self.blob(&sha256_digest(b)) == b, "blob {} of {}", sha256_digest(b), img.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the clients

/// Runs `skopeo --insecure-policy ARGS`, panicking with its output on failure; returns stdout.
pub fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// Runs skopeo and returns its raw output (for commands that are expected to fail).
pub fn skopeo_output(args: &[&str]) -> Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo: {e} (is it installed? .ci/run installs it)"))
}

/// Like `common::run` but the panic message also carries the daemon's log.
pub fn run_logged(p: &Pier, cmd: &mut Command) -> String {
    run_or_explain(cmd, || format!("\n--- pier log (tail) ---\n{}", log_tail(p)))
}

/// skopeo against pier, with the daemon log in the panic message.
pub fn skopeo_p(p: &Pier, args: &[&str]) -> String {
    run_logged(p, Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// The last 80 lines of the daemon log.
pub fn log_tail(p: &Pier) -> String {
    let log = p.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
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

/// A fresh temporary directory.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
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
    assert_eq!(r.status, 200, "GET manifest {repo}:{tag}: {}\n{}", r.text(), log_tail(p));
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
        assert_eq!(r.status, 200, "GET blob {repo}@{d}: {}\n{}", r.text(), log_tail(p));
        assert_eq!(r.body.len(), b.len(), "length of blob {repo}@{d}");
        assert!(r.body == b, "content of blob {repo}@{d} differs");
    }
}

/// Sends raw bytes on a fresh connection and reads the whole response. Unlike `common::request`
/// it reports I/O failures (e.g. the daemon was killed) as `Err` instead of panicking.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"));
    }
    let parsed = std::panic::catch_unwind(|| read_response(&mut std::io::Cursor::new(buf), method == "HEAD"));
    parsed.map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated response"))
}

/// Starts an upload session; returns the Location path (origin stripped).
pub fn start_upload(p: &Pier, repo: &str) -> String {
    let r = p.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202, "POST upload: {}", r.text());
    strip_origin(r.header("location").expect("Location on POST"))
}

/// Appends `?digest=` (or `&digest=`) to an upload location.
pub fn with_digest(loc: &str, digest: &str) -> String {
    with_query(loc, &format!("digest={digest}"))
}

/// Parses a `Range: 0-N` header into N+1 (the number of bytes the server holds).
pub fn range_len(r: &Response) -> u64 {
    let v = r.header("range").unwrap_or_else(|| panic!("no Range header in {} {:?}", r.status, r.headers));
    let end = v.trim().trim_start_matches("bytes=").split('-').nth(1).unwrap_or_else(|| panic!("bad Range {v:?}"));
    end.trim().parse::<u64>().unwrap_or_else(|_| panic!("bad Range {v:?}")) + 1
}

// ---------------------------------------------------------------------------------------------
// The data directory

/// SHA-256 of a file, via coreutils `sha256sum` (the tests are built unoptimised, where the
/// `sha2` crate manages ~20 MB/s; this keeps large-blob checks fast).
pub fn file_sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", text.split_whitespace().next().unwrap_or(""))
}

/// SHA-256 of bytes in memory via `sha256sum` (fast for large buffers).
pub fn fast_sha256(data: &[u8]) -> String {
    if data.len() < (1 << 20) {
        return sha256_digest(data);
    }
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || stdin.write_all(data).expect("write to sha256sum"));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or(""))
    })
}

/// Asserts nothing under `<root>/blobs/` is incomplete: every file is `blobs/sha256/<hex>` and its
/// content hashes to its name. Returns how many blobs were checked.
pub fn assert_store_blobs_complete(root: &Path) -> usize {
    let base = root.join("blobs");
    let files = files_under(&base);
    for f in &files {
        let rel = f.strip_prefix(&base).unwrap();
        let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        assert!(
            parts.len() == 2
                && parts[0] == "sha256"
                && parts[1].len() == 64
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
            "unexpected file under {}: {} (a temporary or partial file in the blob store?)",
            base.display(),
            rel.display()
        );
        assert_eq!(file_sha256(f), format!("sha256:{}", parts[1]), "blob file {} is incomplete/corrupt", f.display());
    }
    files.len()
}

/// The global blob file for a digest.
pub fn store_blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

pub fn nlink(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).nlink()
}

pub fn inode(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// `gzip -dc` of `data`.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut child =
        Command::new("gzip").arg("-dc").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(data);
        });
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "gzip -dc failed");
        out.stdout
    })
}

/// Reads pier's on-disk layout of `repo` while the daemon runs: checks it directly (oci-layout,
/// index.json tags, every blob hashing to its name) and copies `tag` out of it with skopeo
/// (`--all` for an index); returns the copied layout.
pub fn disk_layout_copy(p: &Pier, repo: &str, tag: &str, all: bool) -> (Layout, tempfile::TempDir) {
    let repo_dir = p.root.join("repositories").join(repo);
    let direct = read_layout(&repo_dir);
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

/// The regular files of a ustar archive (as written by `tar_archive`): name → content.
pub fn tar_files(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name = String::from_utf8_lossy(&h[..100]).trim_end_matches('\0').to_string();
        let size_field =
            String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' ').to_string();
        let size = usize::from_str_radix(&size_field, 8).unwrap_or(0);
        off += 512;
        if h[156] == b'0' || h[156] == 0 {
            out.insert(name, tar[off..off + size].to_vec());
        }
        off += size.div_ceil(512) * 512;
    }
    out
}

/// A temporary directory whose path is all lowercase (podman derives an image name from an
/// `oci:` path, and image names must be lowercase). Removed on drop.
pub struct LowerTmp(pub PathBuf);

impl Default for LowerTmp {
    fn default() -> Self {
        Self::new()
    }
}

impl LowerTmp {
    pub fn new() -> LowerTmp {
        let d = std::env::temp_dir().join(format!("pier-e2e-{}", nonce()));
        std::fs::create_dir_all(&d).unwrap();
        LowerTmp(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LowerTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends a request whose body is cut short: the head announces `Content-Length: total` but only
/// `body` is written. The connection is returned open (the daemon is meant to be killed now).
pub fn send_partial(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    total: usize,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {total}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    s
}

/// Checks a pier repository's on-disk OCI layout is self-consistent: every blob hashes to its
/// name, and every manifest named in index.json is present with the right size, together with
/// everything it references (config, layers, child manifests). Returns the tags.
pub fn assert_layout_consistent(dir: &Path) -> Vec<String> {
    let layout = read_layout(dir);
    let entries = layout.index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{}/index.json: {}", dir.display(), layout.index))
        .clone();
    let mut stack: Vec<Value> = entries;
    while let Some(desc) = stack.pop() {
        let d = desc["digest"].as_str().unwrap_or_else(|| panic!("descriptor without digest: {desc}"));
        let bytes =
            layout.blobs.get(d).unwrap_or_else(|| panic!("{}: {d} referenced but missing ({desc})", dir.display()));
        assert_eq!(desc["size"].as_u64(), Some(bytes.len() as u64), "{}: size of {d}", dir.display());
        let mt = desc["mediaType"].as_str().unwrap_or("");
        if mt.contains("manifest") || mt.contains("index") {
            let m: Value =
                serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{}: {d} is not JSON: {e}", dir.display()));
            if let Some(c) = m.get("config") {
                stack.push(c.clone());
            }
            for key in ["layers", "manifests"] {
                if let Some(a) = m[key].as_array() {
                    stack.extend(a.iter().cloned());
                }
            }
        }
    }
    layout.tags()
}

/// Checks the dedup invariant of pier's data directory: every blob in a repository layout
/// (`<root>/repositories/<name>/blobs/sha256/<hex>`) is a hardlink of the global blob
/// `<root>/blobs/sha256/<hex>`, and each global blob's link count is 1 + the number of
/// repositories holding it. Returns the number of repository blob links seen.
pub fn assert_store_links_consistent(root: &Path) -> usize {
    let mut per_global: BTreeMap<String, u64> = BTreeMap::new();
    let repos = root.join("repositories");
    let mut links = 0;
    for f in files_under(&repos) {
        let parent = f.parent().unwrap();
        if !(parent.ends_with("blobs/sha256")) {
            continue;
        }
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let global = root.join("blobs/sha256").join(&name);
        assert!(global.exists(), "{} has no global blob {}", f.display(), global.display());
        assert_eq!(inode(&f), inode(&global), "{} is not a hardlink of {}", f.display(), global.display());
        *per_global.entry(name).or_default() += 1;
        links += 1;
    }
    for f in files_under(&root.join("blobs")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let want = 1 + per_global.get(&name).copied().unwrap_or(0);
        assert_eq!(nlink(&f), want, "link count of {} (1 + repositories holding it)", f.display());
    }
    links
}
