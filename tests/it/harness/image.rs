//! Images and OCI layouts held in memory or written to disk: media types, deterministic bytes,
//! digests, minimal tar archives, single-platform images and indexes, and OCI image layouts
//! (written for clients to push, read back and checked after they pull).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
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

/// A fresh temporary directory.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
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

/// Deterministic incompressible-looking bytes (xorshift), for layers.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(data);
    format!("sha256:{}", hex(&h))
}

pub fn sha512_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha512::digest(data);
    format!("sha512:{}", hex(&h))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A minimal OCI image manifest for the given config and layers (each `(digest, size)`).
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(
            |(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}),
        )
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
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
