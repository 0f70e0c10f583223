//! End-to-end: the real `skopeo` client against a real pier daemon over TCP.
//!
//! Source images are OCI layouts generated on disk (config + real tar layers); they are pushed
//! with `skopeo copy oci:… docker://…`, inspected, listed, pulled back and compared byte for
//! byte, read straight out of pier's on-disk per-repository OCI layout, and checked again after
//! the daemon is restarted.

use crate::harness::*;

use serde_json::{json, Value};

fn inspect(p: &Pier, reference: &str, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(reference);
    let out = skopeo_p(p, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo inspect output is not JSON ({e}): {out}"))
}

fn list_tags(p: &Pier, repo: &str) -> Vec<String> {
    let out = skopeo_p(p, &["list-tags", "--tls-verify=false", &format!("docker://{}/{repo}", p.host())]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("list-tags output is not JSON ({e}): {out}"));
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no Tags in {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

#[test]
fn skopeo_push_inspect_list_pull_roundtrip_and_restart() {
    let mut p = Pier::start();
    let img = Image::new("roundtrip", "amd64", &[300_000, 1_200_000, 40_000], 1);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let repo = "e2e/roundtrip";
    skopeo_push(&p, src.path(), "v1", &format!("{repo}:v1"));
    skopeo_push(&p, src.path(), "v1", &format!("{repo}:stable"));
    let reference = format!("docker://{}/{repo}:v1", p.host());

    // inspect --raw gives the exact manifest bytes (--preserve-digests kept the source manifest).
    let raw = skopeo_p(&p, &["inspect", "--raw", "--tls-verify=false", &reference]);
    assert_eq!(raw, String::from_utf8_lossy(&img.manifest), "skopeo inspect --raw");
    // --config --raw gives the exact config bytes.
    let raw_cfg = skopeo_p(&p, &["inspect", "--config", "--raw", "--tls-verify=false", &reference]);
    assert_eq!(raw_cfg, String::from_utf8_lossy(&img.config), "skopeo inspect --config --raw");

    let v = inspect(&p, &reference, &[]);
    assert_eq!(v["Digest"], img.digest(), "inspect Digest: {v}");
    assert_eq!(v["Layers"], json!(img.layer_digests()), "inspect Layers: {v}");
    assert_eq!(v["Architecture"], "amd64", "{v}");
    assert_eq!(v["Os"], "linux", "{v}");
    assert_eq!(v["Labels"]["pier.e2e.image"], "roundtrip", "{v}");
    let mut repo_tags: Vec<String> =
        v["RepoTags"].as_array().expect("RepoTags").iter().map(|t| t.as_str().unwrap().to_string()).collect();
    repo_tags.sort();
    assert_eq!(repo_tags, ["stable", "v1"]);

    assert_eq!(list_tags(&p, repo), ["stable", "v1"], "skopeo list-tags");

    // Pull both tags back and compare every byte with the source.
    assert_pulls_identical(&p, repo, "v1", &img);
    assert_pulls_identical(&p, repo, "stable", &img);
    // Pull by digest as well.
    let dst = tmpdir();
    let by_digest = skopeo_pull(&p, &format!("{repo}@{}", img.digest()), dst.path(), "bydigest");
    by_digest.assert_has_image("bydigest", &img);

    // pier's own on-disk OCI layout is readable by skopeo while the daemon runs.
    let (disk, _keep) = disk_layout_copy(&p, repo, "v1", false);
    disk.assert_has_image("v1", &img);
    let (disk, _keep2) = disk_layout_copy(&p, repo, "stable", false);
    disk.assert_has_image("stable", &img);

    // Restart on the same data directory: everything is still there.
    p.restart();
    assert_pulls_identical(&p, repo, "v1", &img);
    assert_eq!(list_tags(&p, repo), ["stable", "v1"], "list-tags after restart");

    // SIGKILL while idle, then restart: still identical.
    p.kill9();
    p.restart();
    assert_pulls_identical(&p, repo, "v1", &img);
    assert_pulls_identical(&p, repo, "stable", &img);
    let (disk, _keep3) = disk_layout_copy(&p, repo, "v1", false);
    disk.assert_has_image("v1", &img);
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn skopeo_push_without_preserve_digests_gzips_layers() {
    let p = Pier::start();
    let img = Image::new("gz", "amd64", &[400_000, 900_000], 2);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let repo = "e2e/gzipped";
    let dst_ref = format!("docker://{}/{repo}:v1", p.host());
    skopeo_p(&p, &["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", src.path().display()), &dst_ref]);

    let r = get_manifest(&p, repo, "v1");
    assert_eq!(r.status, 200, "GET manifest: {}", r.text());
    let digest = sha256_digest(&r.body);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_ne!(digest, img.digest(), "skopeo should have rewritten the manifest (gzip layers)");
    let m = r.json();
    assert_eq!(m["config"]["digest"], img.config_digest(), "config is unchanged: {m}");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), img.layers.len());
    for l in layers {
        assert!(l["mediaType"].as_str().unwrap().ends_with("tar+gzip"), "layer is gzip: {l}");
    }

    let raw = skopeo_p(&p, &["inspect", "--raw", "--tls-verify=false", &dst_ref]);
    assert!(raw.as_bytes() == r.body.as_slice(), "inspect --raw equals the served manifest");
    let v = inspect(&p, &dst_ref, &[]);
    assert_eq!(v["Digest"], digest.as_str());
    let want_layers: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    assert_eq!(v["Layers"], Value::Array(want_layers));

    // Pull back: same manifest bytes, and each gzip layer decompresses to the source tar.
    let dst = tmpdir();
    let back = skopeo_pull(&p, &format!("{repo}:v1"), dst.path(), "v1");
    let (_, bytes) = back.tagged("v1");
    assert!(bytes == r.body, "pulled manifest equals the served one");
    assert!(back.blob(&img.config_digest()) == img.config.as_slice());
    for (l, src_tar) in layers.iter().zip(&img.layers) {
        let blob = back.blob(l["digest"].as_str().unwrap());
        assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
        assert!(gunzip(blob) == *src_tar, "layer {} does not decompress to the source tar", l["digest"]);
    }
}

#[test]
fn skopeo_docker_schema2_roundtrip() {
    let p = Pier::start();
    let img = Image::new("docker", "amd64", &[300_000, 200_000], 6);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let repo = "e2e/docker-format";
    let dst_ref = format!("docker://{}/{repo}:v1", p.host());
    skopeo_p(
        &p,
        &["copy", "--format", "v2s2", "--dest-tls-verify=false", &format!("oci:{}:v1", src.path().display()), &dst_ref],
    );
    let r = get_manifest(&p, repo, "v1");
    assert_eq!(r.status, 200, "GET manifest: {}", r.text());
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST), "Docker schema 2 media type is kept");
    let digest = sha256_digest(&r.body);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let m = r.json();
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    assert_eq!(m["config"]["digest"], img.config_digest());

    let v = inspect(&p, &dst_ref, &[]);
    assert_eq!(v["Digest"], digest.as_str());

    // `dir:` keeps the manifest bytes exactly as served.
    let out = tmpdir();
    let dir = out.path().join("img");
    skopeo_p(&p, &["copy", "--src-tls-verify=false", &dst_ref, &format!("dir:{}", dir.display())]);
    let served = std::fs::read(dir.join("manifest.json")).unwrap();
    assert!(served == r.body, "dir: manifest equals the served one");
    let hexname = |d: &str| d.trim_start_matches("sha256:").to_string();
    assert!(std::fs::read(dir.join(hexname(&img.config_digest()))).unwrap() == img.config);
    for (l, src_tar) in m["layers"].as_array().unwrap().iter().zip(&img.layers) {
        let d = l["digest"].as_str().unwrap();
        let blob = std::fs::read(dir.join(hexname(d))).unwrap();
        assert_eq!(sha256_digest(&blob), d);
        let plain = if l["mediaType"].as_str().unwrap().ends_with("gzip") { gunzip(&blob) } else { blob };
        assert!(plain == *src_tar, "layer {d} content");
    }

    // pier's on-disk layout holds the Docker manifest as is, with all its blobs. (Not read back
    // with `skopeo copy oci:…`: containers/image's oci: transport only resolves tags whose
    // index.json descriptor has an OCI media type, so Docker-format images can't be read by tag.)
    let disk = settled_layout(&p, repo);
    assert_layout_consistent(&p.root.join("repositories").join(repo));
    let (mt, bytes) = disk.tagged("v1");
    assert_eq!(mt, DOCKER_MANIFEST, "media type in the on-disk index.json");
    assert!(bytes == r.body, "on-disk manifest bytes");
}

#[test]
fn skopeo_multi_arch_index_copy_all() {
    let mut p = Pier::start();
    let amd = Image::new("multi-amd64", "amd64", &[200_000, 300_000], 3);
    let arm = Image::new("multi-arm64", "arm64", &[250_000, 100_000], 4);
    let src = tmpdir();
    let index = write_index_layout(src.path(), "multi", &[&amd, &arm]);

    let repo = "e2e/multi";
    let reference = format!("docker://{}/{repo}:multi", p.host());
    skopeo_push_all(&p, src.path(), "multi", &format!("{repo}:multi"));

    let raw = skopeo_p(&p, &["inspect", "--raw", "--tls-verify=false", &reference]);
    assert_eq!(raw, String::from_utf8_lossy(&index), "inspect --raw of the index");
    let r = get_manifest(&p, repo, "multi");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(&index).as_str()));

    for (arch, img) in [("amd64", &amd), ("arm64", &arm)] {
        let v = inspect(&p, &reference, &["--override-arch", arch, "--override-os", "linux"]);
        assert_eq!(v["Architecture"], arch, "{v}");
        assert_eq!(v["Layers"], json!(img.layer_digests()), "layers of {arch}: {v}");
        let raw = skopeo_p(
            &p,
            &["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/{repo}@{}", p.host(), img.digest())],
        );
        assert_eq!(raw, String::from_utf8_lossy(&img.manifest), "child manifest {arch} by digest");
        assert_blobs_served(&p, repo, img);
    }

    let check = |layout: &Layout| {
        let (mt, bytes) = layout.tagged("multi");
        assert_eq!(mt, OCI_INDEX);
        assert!(bytes == index, "index bytes");
        layout.assert_has_blobs(&amd);
        layout.assert_has_blobs(&arm);
    };
    let pull_all = |p: &Pier| {
        let dst = tmpdir();
        skopeo_p(
            p,
            &[
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                &reference_of(p, repo, "multi"),
                &format!("oci:{}:multi", dst.path().display()),
            ],
        );
        read_layout(dst.path())
    };
    check(&pull_all(&p));
    let (disk, _keep) = disk_layout_copy(&p, repo, "multi", true);
    check(&disk);

    p.kill9();
    p.restart();
    check(&pull_all(&p));
}

fn reference_of(p: &Pier, repo: &str, tag: &str) -> String {
    format!("docker://{}/{repo}:{tag}", p.host())
}

#[test]
fn skopeo_cross_repo_copy_mounts_and_dedups() {
    let p = Pier::start();
    let img = Image::new("mount", "amd64", &[500_000, 700_000], 5);
    // skopeo asks for a mount only where its blob-info cache saw the blob: this test's own cache,
    // so the parallel tests' skopeo and podman runs cannot make it forget the push to e2e/mount-a.
    let cache = PrivateBlobInfoCache::new();
    let src = tmpdir();
    write_image_layout(src.path(), "t", &img);
    let oci = format!("oci:{}:t", src.path().display());
    let push = ["copy", "--preserve-digests", "--dest-tls-verify=false", &oci, &reference_of(&p, "e2e/mount-a", "t")];
    run_logged(&p, &mut cache.skopeo(&push));
    // Registry-to-registry copy within pier: skopeo (which saw the blobs in e2e/mount-a) asks
    // for a cross-repository mount of each layer; its debug log says whether pier granted it.
    let out = output(&mut cache.skopeo(&[
        "--debug",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &reference_of(&p, "e2e/mount-a", "t"),
        &reference_of(&p, "e2e/mount-b", "t"),
    ]));
    let debug = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skopeo copy a -> b failed:\n{debug}\n{}", p.log_tail());
    // skopeo 1.9 asks for a mount only where its blob-info cache has a usable record of the
    // blob; now and then (seen in CI even with a private cache, cause inside containers/image
    // not pinned down) it has one for only one of the two layers and uploads the other.
    // Every mount it does ask for must be granted; the deterministic mount tests are in `api`.
    let attempts =
        img.layer_digests().iter().filter(|d| debug.contains(&format!("mount={}", d.replace(':', "%3A")))).count();
    assert!(attempts >= 1, "skopeo tried no mount at all:\n{debug}");
    let granted = debug.matches("mount OK").count();
    assert_eq!(granted, attempts, "pier should grant every mount skopeo asks for:\n{debug}\n{}", p.log_tail());
    assert_image_served(&p, "e2e/mount-b", "t", &img);
    assert_pulls_identical(&p, "e2e/mount-b", "t", &img);
    assert_image_served(&p, "e2e/mount-a", "t", &img);

    // Stored once: the global blob and both repositories' layout blobs are one inode.
    for b in img.blobs() {
        let d = sha256_digest(b);
        let hexd = d.trim_start_matches("sha256:");
        let global = store_blob_path(&p.root, &d);
        let in_a = p.root.join("repositories/e2e/mount-a/blobs/sha256").join(hexd);
        let in_b = p.root.join("repositories/e2e/mount-b/blobs/sha256").join(hexd);
        assert_eq!(std::fs::metadata(&global).map(|m| m.len()).ok(), Some(b.len() as u64), "{}", global.display());
        assert_eq!(nlink(&global), 3, "link count of {} (global + e2e/mount-a + e2e/mount-b)", global.display());
        assert_eq!(inode(&in_a), inode(&global), "{} is a hardlink of the global blob", in_a.display());
        assert_eq!(inode(&in_b), inode(&global), "{} is a hardlink of the global blob", in_b.display());
    }
    let (disk, _keep) = disk_layout_copy(&p, "e2e/mount-b", "t", false);
    disk.assert_has_image("t", &img);
    assert_store_links_consistent(&p.root);
}

#[test]
fn skopeo_delete_then_inspect_fails() {
    let mut p = Pier::start();
    let gone = Image::new("gone", "amd64", &[100_000, 50_000], 7);
    let keep = Image::new("keep", "amd64", &[120_000], 8);
    let (s1, s2) = (tmpdir(), tmpdir());
    write_image_layout(s1.path(), "t", &gone);
    write_image_layout(s2.path(), "t", &keep);
    let repo = "e2e/delete";
    skopeo_push(&p, s1.path(), "t", &format!("{repo}:gone"));
    skopeo_push(&p, s2.path(), "t", &format!("{repo}:keep"));
    assert_eq!(list_tags(&p, repo), ["gone", "keep"]);

    skopeo_p(&p, &["delete", "--tls-verify=false", &reference_of(&p, repo, "gone")]);

    let check_deleted = |p: &Pier| {
        let out = skopeo_output(&["inspect", "--tls-verify=false", &reference_of(p, repo, "gone")]);
        assert!(
            !out.status.success(),
            "inspect of a deleted image must fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("manifest unknown") || err.contains("not found"), "inspect error: {err}");
        let r = get_manifest(p, repo, &gone.digest());
        assert_eq!(r.status, 404, "deleted manifest by digest: {}", r.text());
        assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
        assert_eq!(get_manifest(p, repo, "gone").status, 404, "tag of the deleted manifest");
        assert_eq!(list_tags(p, repo), ["keep"], "list-tags after delete");
        assert_pulls_identical(p, repo, "keep", &keep);
        let layout = settled_layout(p, repo);
        assert_eq!(layout.tags(), ["keep"], "on-disk index.json after delete: {}", layout.index);
    };
    check_deleted(&p);
    p.restart();
    check_deleted(&p);
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn skopeo_concurrent_pushes_share_a_base_layer() {
    let p = Pier::start();
    let n = nonce();
    let base = tar_archive(&[
        ("pier-e2e/", b""),
        ("pier-e2e/base.txt", format!("shared base {n}\n").as_bytes()),
        ("pier-e2e/base.bin", &random_bytes(1_500_000, 100)),
    ]);
    let images: Vec<Image> = (0..4u64)
        .map(|i| {
            let top = tar_archive(&[
                ("pier-e2e/", b""),
                (&format!("pier-e2e/conc-{i}.txt"), format!("concurrent {i} {n}\n").as_bytes()),
                (&format!("pier-e2e/conc-{i}.bin"), &random_bytes(200_000, 101 + i)),
            ]);
            Image::from_layers(&format!("conc-{i}"), "amd64", vec![base.clone(), top])
        })
        .collect();
    let dirs = image_layout_dirs(&images, "v1");
    // Four skopeo processes push at once: the shared base layer is uploaded concurrently.
    let children: Vec<_> = (0..images.len())
        .map(|i| {
            std::process::Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:v1", dirs[i].path().display()))
                .arg(reference_of(&p, &format!("e2e/conc-{i}"), "v1"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run skopeo (is it installed? .ci/run installs it)")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "concurrent push {i} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            p.log_tail()
        );
    }
    for (i, img) in images.iter().enumerate() {
        assert_pulls_identical(&p, &format!("e2e/conc-{i}"), "v1", img);
    }
    // The base layer is one file linked into every repository.
    let global = store_blob_path(&p.root, &sha256_digest(&base));
    assert_eq!(nlink(&global), 1 + images.len() as u64, "link count of the shared base layer {}", global.display());
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn skopeo_tag_overwrite_and_many_tags() {
    let mut p = Pier::start();
    let repo = "e2e/retag";
    let a = Image::new("retag-a", "amd64", &[100_000], 110);
    let b = Image::new("retag-b", "amd64", &[110_000], 111);
    let (sa, sb) = (tmpdir(), tmpdir());
    write_image_layout(sa.path(), "t", &a);
    write_image_layout(sb.path(), "t", &b);
    skopeo_push(&p, sa.path(), "t", &format!("{repo}:latest"));
    assert_pulls_identical(&p, repo, "latest", &a);
    // Re-point `latest` at another image.
    skopeo_push(&p, sb.path(), "t", &format!("{repo}:latest"));
    assert_pulls_identical(&p, repo, "latest", &b);
    // The old image is untagged but still there by digest.
    let dst = tmpdir();
    skopeo_pull(&p, &format!("{repo}@{}", a.digest()), dst.path(), "old").assert_has_image("old", &a);
    let layout = settled_layout(&p, repo);
    assert_eq!(layout.tags(), ["latest"], "one index.json entry for the re-pointed tag: {}", layout.index);
    layout.assert_has_image("latest", &b);

    // Many tags: skopeo list-tags must see all of them (following Link pagination if pier pages).
    let mut want: Vec<String> = (0..150).map(|i| format!("t{i:03}")).collect();
    for t in &want {
        push_manifest(&p, repo, t, OCI_MANIFEST, &a.manifest);
    }
    want.push("latest".to_string());
    want.sort();
    assert_eq!(list_tags(&p, repo), want, "skopeo list-tags with 151 tags");
    p.restart();
    assert_eq!(list_tags(&p, repo), want, "skopeo list-tags after restart");
    assert_pulls_identical(&p, repo, "t149", &a);
    settled_layout(&p, repo);
    assert_eq!(assert_layout_consistent(&p.root.join("repositories").join(repo)), want, "on-disk tags");
}
