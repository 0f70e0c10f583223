//! End-to-end: the real `podman` client against a real pier daemon over TCP.
//!
//! Each test gets its own podman storage (vfs driver, temporary --root/--runroot/--tmpdir), so
//! tests share no state. podman pulls a generated OCI layout, pushes it to pier, forgets it,
//! pulls it back from pier, and the result is checked with `podman image inspect` and by reading
//! the unpacked files out of the vfs storage.

use crate::harness::*;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// A podman with private storage under a temporary directory.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman { dir: tmpdir() }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--cgroup-manager=cgroupfs")
            .arg("--events-backend=file")
            .args(args)
            .env("TMPDIR", d);
        c
    }

    /// Runs podman; panics with its output and the daemon log if it fails.
    fn run(&self, p: &Pier, args: &[&str]) -> String {
        run_logged(p, &mut self.cmd(args))
    }

    fn inspect(&self, p: &Pier, reference: &str) -> Value {
        let out = self.run(p, &["image", "inspect", reference]);
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("podman image inspect is not JSON ({e}): {out}"));
        v[0].clone()
    }

    /// Image IDs in local storage.
    fn image_ids(&self, p: &Pier) -> Vec<String> {
        let out = self.run(p, &["images", "--no-trunc", "--format", "{{.ID}}"]);
        out.lines().map(|l| l.trim().trim_start_matches("sha256:").to_string()).filter(|l| !l.is_empty()).collect()
    }

    /// Finds `rel` inside some unpacked layer directory of the vfs storage.
    fn find_unpacked(&self, rel: &str) -> Vec<PathBuf> {
        let base = self.root().join("vfs/dir");
        let mut found = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let f = e.path().join(rel);
                if f.is_file() {
                    found.push(f);
                }
            }
        }
        found
    }
}

/// Checks what `podman image inspect` says about an image pulled from pier.
fn assert_inspect(v: &Value, img: &Image, manifest_digest: &str, repo_ref: &str) {
    assert_eq!(v["Id"], img.config_digest().trim_start_matches("sha256:"), "image ID is the config digest: {v}");
    assert_eq!(v["Digest"], manifest_digest, "manifest digest: {v}");
    let diff_ids: Vec<Value> = img.layer_digests().into_iter().map(Value::from).collect();
    assert_eq!(v["RootFS"]["Layers"], Value::Array(diff_ids), "RootFS layers (diff IDs): {v}");
    assert_eq!(v["Architecture"], img.arch.as_str());
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Labels"]["pier.e2e.image"], img.name.as_str(), "{v}");
    let repo_digests = v["RepoDigests"].to_string();
    assert!(repo_digests.contains(&format!("{repo_ref}@{manifest_digest}")), "RepoDigests {repo_digests}");
}

/// The manifest pier serves for `repo:tag`: checks it is complete (all blobs served, matching
/// digests) and returns `(digest, manifest JSON)`.
fn served_manifest(p: &Pier, repo: &str, tag: &str, img: &Image) -> (String, Value) {
    let r = get_manifest(p, repo, tag);
    assert_eq!(r.status, 200, "GET manifest {repo}:{tag}: {}\n{}", r.text(), p.log_tail());
    let digest = sha256_digest(&r.body);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let m = r.json();
    assert_eq!(m["config"]["digest"], img.config_digest(), "config of the pushed image: {m}");
    let cfg = p.get(&format!("/v2/{repo}/blobs/{}", img.config_digest()));
    assert_eq!(cfg.status, 200);
    assert!(cfg.body == img.config, "config bytes are unchanged by podman push");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), img.layers.len(), "layer count: {m}");
    for (l, src) in layers.iter().zip(&img.layers) {
        let d = l["digest"].as_str().unwrap();
        let b = p.get(&format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(b.status, 200, "GET blob {d}: {}", b.text());
        assert_eq!(sha256_digest(&b.body), d, "blob {d} content");
        assert_eq!(b.body.len() as u64, l["size"].as_u64().unwrap(), "size of {d}");
        let plain = if l["mediaType"].as_str().unwrap_or("").contains("gzip") { gunzip(&b.body) } else { b.body };
        assert!(plain == *src, "layer {d} does not hold the source tar");
    }
    (digest, m)
}

/// Every file of every layer of `img` was unpacked into the vfs storage with the right content.
fn assert_unpacked(pm: &Podman, img: &Image) {
    for layer in &img.layers {
        for (name, data) in tar_files(layer) {
            let found = pm.find_unpacked(&name);
            assert!(!found.is_empty(), "{name} not unpacked anywhere under {}/vfs/dir", pm.root().display());
            for f in found {
                assert!(std::fs::read(&f).unwrap() == data, "{} differs from the layer's {name}", f.display());
            }
        }
    }
}

#[test]
fn podman_pull_push_rmi_pull_inspect() {
    let p = Pier::start();
    let img = Image::new("podman", "amd64", &[600_000, 1_500_000, 30_000], 11);
    let src = LowerTmp::new();
    write_image_layout(src.path(), "v1", &img);
    let pm = Podman::new();
    let config_hex = img.config_digest().trim_start_matches("sha256:").to_string();

    // Load the source image from the OCI layout.
    pm.run(&p, &["pull", &format!("oci:{}:v1", src.path().display())]);
    assert_eq!(pm.image_ids(&p), [config_hex.as_str()], "podman images after pulling the layout");

    // Push to pier.
    let repo = "e2e/podman";
    let target = format!("{}/{repo}:v1", p.host());
    pm.run(&p, &["tag", &config_hex, &target]);
    pm.run(&p, &["push", "--tls-verify=false", &target]);
    let (digest, _) = served_manifest(&p, repo, "v1", &img);

    // Forget everything locally, then pull from pier.
    pm.run(&p, &["rmi", "--all", "--force"]);
    assert!(pm.image_ids(&p).is_empty(), "podman images after rmi --all");
    assert!(pm.find_unpacked(&format!("pier-e2e/{}-0.txt", img.name)).is_empty(), "layers gone after rmi");
    pm.run(&p, &["pull", "--tls-verify=false", &target]);
    assert_eq!(pm.image_ids(&p), [config_hex.as_str()]);
    let v = pm.inspect(&p, &target);
    assert_inspect(&v, &img, &digest, &format!("{}/{repo}", p.host()));
    assert_unpacked(&pm, &img);

    // Pull by digest into a fresh storage too.
    let pm2 = Podman::new();
    let by_digest = format!("{}/{repo}@{digest}", p.host());
    pm2.run(&p, &["pull", "--tls-verify=false", &by_digest]);
    let v = pm2.inspect(&p, &by_digest);
    assert_inspect(&v, &img, &digest, &format!("{}/{repo}", p.host()));
    assert_unpacked(&pm2, &img);

    // skopeo sees the same thing podman pushed.
    let raw = skopeo_p(&p, &["inspect", "--raw", "--tls-verify=false", &format!("docker://{target}")]);
    assert_eq!(sha256_digest(raw.as_bytes()), digest);
}

#[test]
fn podman_images_sharing_a_base_layer() {
    let p = Pier::start();
    let n = nonce();
    let base_layer = tar_archive(&[
        ("pier-e2e/", b""),
        ("pier-e2e/base-0.txt", format!("image base layer 0 {n}\n").as_bytes()),
        ("pier-e2e/base-0.bin", &random_bytes(700_000, 21)),
    ]);
    let mk = |name: &str, seed: u64| {
        let top = tar_archive(&[
            ("pier-e2e/", b""),
            (&format!("pier-e2e/{name}-1.txt"), format!("image {name} layer 1 {n}\n").as_bytes()),
            (&format!("pier-e2e/{name}-1.bin"), &random_bytes(200_000, seed)),
        ]);
        Image::from_layers(name, "amd64", vec![base_layer.clone(), top])
    };
    let app1 = mk("app1", 22);
    let app2 = mk("app2", 23);
    let (s1, s2) = (LowerTmp::new(), LowerTmp::new());
    write_image_layout(s1.path(), "v1", &app1);
    write_image_layout(s2.path(), "v1", &app2);

    let pm = Podman::new();
    let mut digests = Vec::new();
    for (img, src) in [(&app1, &s1), (&app2, &s2)] {
        pm.run(&p, &["pull", &format!("oci:{}:v1", src.path().display())]);
        let target = format!("{}/e2e/{}:v1", p.host(), img.name);
        pm.run(&p, &["tag", img.config_digest().trim_start_matches("sha256:"), &target]);
        pm.run(&p, &["push", "--tls-verify=false", &target]);
        let (digest, m) = served_manifest(&p, &format!("e2e/{}", img.name), "v1", img);
        digests.push((digest, m));
    }
    // Both manifests reference the same stored base layer blob.
    assert_eq!(digests[0].1["layers"][0]["digest"], digests[1].1["layers"][0]["digest"], "base layer shared");

    let fresh = Podman::new();
    for (img, (digest, _)) in [&app1, &app2].into_iter().zip(&digests) {
        let target = format!("{}/e2e/{}:v1", p.host(), img.name);
        fresh.run(&p, &["pull", "--tls-verify=false", &target]);
        let v = fresh.inspect(&p, &target);
        assert_inspect(&v, img, digest, &format!("{}/e2e/{}", p.host(), img.name));
        assert_unpacked(&fresh, img);
    }
    let mut ids = fresh.image_ids(&p);
    ids.sort();
    let mut want = vec![
        app1.config_digest().trim_start_matches("sha256:").to_string(),
        app2.config_digest().trim_start_matches("sha256:").to_string(),
    ];
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn podman_zstd_push_and_pull() {
    let p = Pier::start();
    let img = Image::new("zstd", "amd64", &[800_000, 100_000], 13);
    let src = LowerTmp::new();
    write_image_layout(src.path(), "v1", &img);
    let pm = Podman::new();
    let config_hex = img.config_digest().trim_start_matches("sha256:").to_string();
    pm.run(&p, &["pull", &format!("oci:{}:v1", src.path().display())]);
    let repo = "e2e/podman-zstd";
    let target = format!("{}/{repo}:v1", p.host());
    pm.run(&p, &["tag", &config_hex, &target]);
    pm.run(&p, &["push", "--tls-verify=false", "--compression-format", "zstd", &target]);

    let r = get_manifest(&p, repo, "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    let digest = sha256_digest(&r.body);
    let m = r.json();
    for l in m["layers"].as_array().expect("layers") {
        assert!(l["mediaType"].as_str().unwrap_or("").ends_with("+zstd"), "zstd layer media type: {l}");
        let d = l["digest"].as_str().unwrap();
        let b = p.get(&format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(b.status, 200);
        assert_eq!(sha256_digest(&b.body), d);
        assert_eq!(b.body.len() as u64, l["size"].as_u64().unwrap());
    }

    let fresh = Podman::new();
    fresh.run(&p, &["pull", "--tls-verify=false", &target]);
    let v = fresh.inspect(&p, &target);
    assert_inspect(&v, &img, &digest, &format!("{}/{repo}", p.host()));
    assert_unpacked(&fresh, &img);
}

#[test]
fn podman_pulls_the_right_platform_from_an_index() {
    let p = Pier::start();
    let amd = Image::new("plat-amd64", "amd64", &[300_000], 14);
    let arm = Image::new("plat-arm64", "arm64", &[320_000], 15);
    let src = tmpdir();
    write_index_layout(src.path(), "multi", &[&amd, &arm]);
    let repo = "e2e/podman-multi";
    let target = format!("{}/{repo}:multi", p.host());
    skopeo_push_all(&p, src.path(), "multi", &format!("{repo}:multi"));
    for (arch, img) in [("arm64", &arm), ("amd64", &amd)] {
        let pm = Podman::new();
        pm.run(&p, &["pull", "--tls-verify=false", "--arch", arch, &target]);
        let v = pm.inspect(&p, &target);
        assert_eq!(v["Architecture"], arch, "{v}");
        assert_eq!(v["Id"], img.config_digest().trim_start_matches("sha256:"), "{v}");
        let diff_ids: Vec<Value> = img.layer_digests().into_iter().map(Value::from).collect();
        assert_eq!(v["RootFS"]["Layers"], Value::Array(diff_ids), "{v}");
        assert_unpacked(&pm, img);
    }
}
