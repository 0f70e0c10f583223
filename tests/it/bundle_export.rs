//! `pier export` and `pier inventory` against the real binary (ARCHITECTURE.md, "Bundles"):
//! generated multi-layer and multi-platform images with referrers, exported through a running
//! daemon (the pipe passed over admin.sock) and from a stopped store; the archive's entries,
//! order and `pier-bundle.json` checked blob by blob; skopeo and docker load read it; deltas
//! against an inventory; zstd and volumes; refusals that leave no file; memory with a large
//! layer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const SIG_TYPE: &str = "application/vnd.example.signature.v1";
const SBOM_TYPE: &str = "application/vnd.example.sbom.v1";

/// Runs `pier export ARGS --config CONFIG`.
fn pier_cmd(p: &Pier, command: &str, args: &[&str]) -> Command {
    let mut c = Command::new(PIER);
    c.arg(command).args(args).arg("--config").arg(&p.config);
    c
}

fn export(p: &Pier, args: &[&str]) -> Output {
    output(&mut pier_cmd(p, "export", args))
}

#[track_caller]
fn export_ok(p: &Pier, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = export(p, &all);
    assert!(out.status.success(), "pier export {args:?}: {}\n{}", text(&out), p.log_tail());
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The entries of a tar archive, in order.
fn tar_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        out.push((path, data));
    }
    out
}

/// A referrer (an artifact manifest whose subject is `subject`), pushed by digest into `repo`.
fn push_referrer(p: &Pier, repo: &str, subject: (&str, &str, usize), artifact_type: &str, payload: &[u8]) -> String {
    let empty = push_blob(p, repo, b"{}");
    let payload_digest = push_blob(p, repo, payload);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": payload_digest, "size": payload.len()}],
        "subject": {"mediaType": subject.0, "digest": subject.1, "size": subject.2},
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    push_manifest(p, repo, &digest, OCI_MANIFEST, &manifest);
    digest
}

/// What the tests push: `team/app:v1` (three layers), `team/multi:v2` (an index of an amd64
/// and an arm64 image), a signature of the index and an SBOM of the amd64 image.
struct Fixture {
    app: Image,
    amd: Image,
    arm: Image,
    index: Vec<u8>,
    sig: String,
    sig_payload: Vec<u8>,
    sbom: String,
    sbom_payload: Vec<u8>,
}

impl Fixture {
    fn push(p: &Pier) -> Fixture {
        let app = Image::new("app", "amd64", &[3000, 50_000, 7], 1);
        push_image_raw(p, "team/app", "v1", &app);
        let amd = Image::new("multi-amd", "amd64", &[20_000, 100], 2);
        let arm = Image::new("multi-arm", "arm64", &[30_000], 3);
        for img in [&amd, &arm] {
            for b in img.blobs() {
                push_blob(p, "team/multi", b);
            }
            push_manifest(p, "team/multi", &img.digest(), OCI_MANIFEST, &img.manifest);
        }
        let index = image_index(&[&amd, &arm]);
        push_manifest(p, "team/multi", "v2", OCI_INDEX, &index);
        let index_digest = sha256_digest(&index);
        let sig_payload = format!("signature {}", nonce()).into_bytes();
        let sig = push_referrer(p, "team/multi", (OCI_INDEX, &index_digest, index.len()), SIG_TYPE, &sig_payload);
        let sbom_payload = format!("sbom {}", nonce()).into_bytes();
        let sbom =
            push_referrer(p, "team/multi", (OCI_MANIFEST, &amd.digest(), amd.manifest.len()), SBOM_TYPE, &sbom_payload);
        Fixture { app, amd, arm, index, sig, sig_payload, sbom, sbom_payload }
    }

    fn index_digest(&self) -> String {
        sha256_digest(&self.index)
    }

    /// Every digest an export of both references must carry: layers, configs, manifests,
    /// the index, the referrers and their blobs.
    fn all_digests(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for img in [&self.app, &self.amd, &self.arm] {
            all.insert(img.digest());
            all.insert(img.config_digest());
            all.extend(img.layer_digests());
        }
        all.insert(self.index_digest());
        all.extend([self.sig.clone(), self.sbom.clone(), sha256_digest(b"{}")]);
        all.extend([sha256_digest(&self.sig_payload), sha256_digest(&self.sbom_payload)]);
        all
    }
}

/// Checks a bundle's structure and returns its `pier-bundle.json` and entries by name.
#[track_caller]
fn check_bundle(bytes: &[u8]) -> (Value, BTreeMap<String, Vec<u8>>) {
    let entries = tar_entries(bytes);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "oci-layout", "{names:?}");
    assert_eq!(names[1], "pier-bundle.json", "{names:?}");
    let layout: Value = serde_json::from_slice(&entries[0].1).unwrap();
    assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
    let manifest: Value = serde_json::from_slice(&entries[1].1).unwrap();
    assert_eq!(manifest["pierBundleVersion"], 1, "{manifest}");
    // The blobs, in the order pier-bundle.json lists them, each hashing to its name and of its size.
    let listed: Vec<(String, u64)> = manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["digest"].as_str().unwrap().to_string(), b["size"].as_u64().unwrap()))
        .collect();
    let blob_entries: Vec<&(String, Vec<u8>)> = entries.iter().filter(|(n, _)| n.starts_with("blobs/")).collect();
    assert_eq!(blob_entries.len(), listed.len(), "{names:?}\n{manifest}");
    for ((name, data), (digest, size)) in blob_entries.iter().zip(&listed) {
        assert_eq!(name, &format!("blobs/{}", digest.replacen(':', "/", 1)), "stream order is the listed order");
        let actual = if digest.starts_with("sha512:") { sha512_digest(data) } else { sha256_digest(data) };
        assert_eq!(&actual, digest, "{name} hashes to its name");
        assert_eq!(data.len() as u64, *size, "{name}");
    }
    let tail: Vec<&str> = names[2 + blob_entries.len()..].to_vec();
    assert!(tail == ["index.json", "manifest.json"] || tail == ["index.json"], "{names:?}");
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "each entry once: {names:?}");
    (manifest, entries.into_iter().collect())
}

fn digests_of(manifest: &Value, key: &str) -> BTreeSet<String> {
    manifest[key]
        .as_array()
        .map_or_else(BTreeSet::new, |a| a.iter().map(|b| b["digest"].as_str().unwrap().to_string()).collect())
}

fn position(manifest: &Value, digest: &str) -> usize {
    manifest["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .position(|b| b["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not in the bundle: {manifest}"))
}

#[test]
fn export_through_the_daemon_and_from_the_store_writes_the_bundle_format() {
    let mut p = Pier::start();
    let f = Fixture::push(&p);
    let out_dir = tmpdir();
    let through_daemon = out_dir.path().join("daemon.tar");
    let report = export_ok(&p, &["team/app:v1", "team/multi:v2", "-o", through_daemon.to_str().unwrap()]);
    assert!(p.log().contains("admin: export"), "the daemon made it: {}", p.log_tail());

    let bytes = std::fs::read(&through_daemon).unwrap();
    let (manifest, entries) = check_bundle(&bytes);
    assert_eq!(digests_of(&manifest, "blobs"), f.all_digests(), "{manifest}");
    assert!(manifest.get("excluded").is_none() && manifest.get("inventory").is_none(), "{manifest}");
    assert_eq!(
        manifest["images"],
        json!([
            {"repository": "team/app", "tag": "v1", "digest": f.app.digest(), "mediaType": OCI_MANIFEST, "size": f.app.manifest.len()},
            {"repository": "team/multi", "tag": "v2", "digest": f.index_digest(), "mediaType": OCI_INDEX, "size": f.index.len()},
        ])
    );
    // Layers and configs first, then manifests: children before their index, subjects before
    // their referrers.
    let first_manifest =
        [f.app.digest(), f.amd.digest(), f.arm.digest(), f.index_digest(), f.sig.clone(), f.sbom.clone()]
            .iter()
            .map(|d| position(&manifest, d))
            .min()
            .unwrap();
    for layer in f.app.layer_digests().iter().chain(&f.amd.layer_digests()).chain(&[f.arm.config_digest()]) {
        assert!(position(&manifest, layer) < first_manifest, "{layer} before every manifest: {manifest}");
    }
    assert!(position(&manifest, &f.amd.digest()) < position(&manifest, &f.index_digest()));
    assert!(position(&manifest, &f.arm.digest()) < position(&manifest, &f.index_digest()));
    assert!(position(&manifest, &f.index_digest()) < position(&manifest, &f.sig));
    assert!(position(&manifest, &f.amd.digest()) < position(&manifest, &f.sbom));

    // index.json names each reference so that skopeo and containerd find it.
    let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    let refs: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["annotations"][REF_NAME].as_str().unwrap(), d["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(refs, [("team/app:v1", f.app.digest().as_str()), ("team/multi:v2", f.index_digest().as_str())]);
    assert_eq!(index["manifests"][1]["annotations"]["io.pier.repository"], "team/multi");
    // manifest.json for docker load: the image, and the index's child for this machine.
    let docker: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let path = |d: String| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    assert_eq!(
        docker,
        json!([
            {"Config": path(f.app.config_digest()), "RepoTags": ["team/app:v1"], "Layers": f.app.layer_digests().into_iter().map(path).collect::<Vec<_>>()},
            {"Config": path(f.amd.config_digest()), "RepoTags": ["team/multi:v2"], "Layers": f.amd.layer_digests().into_iter().map(path).collect::<Vec<_>>()},
        ])
    );
    // The report counts what was written.
    let total: u64 = manifest["blobs"].as_array().unwrap().iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(report["blobs"], f.all_digests().len(), "{report}");
    assert_eq!(report["bytes"], total, "{report}");
    assert_eq!(report["stream_bytes"].as_u64(), Some(bytes.len() as u64), "{report}");
    assert_eq!(report["output"]["files"], json!([through_daemon]), "{report}");
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "no partial file left: {left:?}");

    // The same export from the stopped store: the same entries and blobs.
    p.stop();
    let from_store = out_dir.path().join("store.tar");
    export_ok(&p, &["team/app:v1", "team/multi:v2", "-o", from_store.to_str().unwrap()]);
    let (manifest2, entries2) = check_bundle(&std::fs::read(&from_store).unwrap());
    assert_eq!(manifest2["blobs"], manifest["blobs"]);
    assert_eq!(manifest2["images"], manifest["images"]);
    assert_eq!(entries2.keys().collect::<Vec<_>>(), entries.keys().collect::<Vec<_>>());
    for (name, data) in &entries {
        if name != "pier-bundle.json" {
            assert!(&entries2[name] == data, "{name} differs between the daemon's and the store's export");
        }
    }

    // `repo` alone is every tag; `repo@digest` is untagged; --from-list adds references.
    p.serve(&[]);
    push_manifest(&p, "team/app", "latest", OCI_MANIFEST, &f.app.manifest);
    let list = out_dir.path().join("refs.txt");
    std::fs::write(&list, format!("# images\n\nteam/multi@{}\n", f.arm.digest())).unwrap();
    let mixed = out_dir.path().join("mixed.tar");
    export_ok(&p, &["team/app", "--from-list", list.to_str().unwrap(), "-o", mixed.to_str().unwrap()]);
    let (manifest3, entries3) = check_bundle(&std::fs::read(&mixed).unwrap());
    let images: Vec<(Value, Value)> =
        manifest3["images"].as_array().unwrap().iter().map(|i| (i["tag"].clone(), i["digest"].clone())).collect();
    assert_eq!(
        images,
        [
            (json!("latest"), json!(f.app.digest())),
            (json!("v1"), json!(f.app.digest())),
            (Value::Null, json!(f.arm.digest())),
        ]
    );
    let docker: Value = serde_json::from_slice(&entries3["manifest.json"]).unwrap();
    assert_eq!(docker[0]["RepoTags"], json!(["team/app:latest", "team/app:v1"]), "one entry per image: {docker}");
    assert_eq!(docker.as_array().unwrap().len(), 1, "untagged images have no docker entry: {docker}");

    // --all: every tag of every repository.
    let all = out_dir.path().join("all.tar");
    let report = export_ok(&p, &["--all", "-o", all.to_str().unwrap()]);
    assert_eq!(report["images"].as_array().unwrap().len(), 3, "{report}");
}

#[test]
fn platform_filters_rewrite_an_index_and_keep_it_whole_when_every_platform_is_kept() {
    let p = Pier::start();
    let f = Fixture::push(&p);
    let dir = tmpdir();
    let arm_only = dir.path().join("arm.tar");
    export_ok(&p, &["team/multi:v2", "--platform", "linux/arm64", "-o", arm_only.to_str().unwrap()]);
    let (manifest, entries) = check_bundle(&std::fs::read(&arm_only).unwrap());
    let image = &manifest["images"][0];
    let new_digest = image["digest"].as_str().unwrap();
    assert_ne!(new_digest, f.index_digest(), "an index that loses children is a new manifest");
    let rewritten: Value = serde_json::from_slice(&entries[&format!("blobs/sha256/{}", &new_digest[7..])]).unwrap();
    assert_eq!(rewritten["manifests"], json!([f.arm.index_entry()]));
    assert_eq!(rewritten["mediaType"], OCI_INDEX);
    let blobs = digests_of(&manifest, "blobs");
    assert!(blobs.contains(&f.arm.digest()) && blobs.contains(&f.arm.layer_digests()[0]));
    for gone in [f.amd.digest(), f.amd.layer_digests()[0].clone(), f.sig.clone(), f.sbom.clone(), f.index_digest()] {
        assert!(!blobs.contains(&gone), "{gone} left out: {manifest}");
    }
    let docker: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    assert_eq!(docker[0]["Config"], format!("blobs/sha256/{}", &f.arm.config_digest()[7..]), "the platform asked for");

    // Every platform asked for: the index as it is, with its referrers.
    let both = dir.path().join("both.tar");
    export_ok(
        &p,
        &["team/multi:v2", "--platform", "linux/arm64", "--platform", "linux/amd64", "-o", both.to_str().unwrap()],
    );
    let (manifest, _) = check_bundle(&std::fs::read(&both).unwrap());
    assert_eq!(manifest["images"][0]["digest"], f.index_digest());
    assert!(digests_of(&manifest, "blobs").contains(&f.sig));

    // A platform the index lacks, or a malformed one: refused, no file.
    for (platform, expected) in
        [("linux/s390x", "no manifest for the platform(s) linux/s390x"), ("linux", "not a platform")]
    {
        let target = dir.path().join("none.tar");
        let out = export(&p, &["team/multi:v2", "--platform", platform, "-o", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(expected), "{}", text(&out));
        assert!(!target.exists() && !dir.path().join("none.tar.partial").exists());
    }
}

#[test]
fn skopeo_reads_the_bundle_as_an_oci_archive_and_docker_load_loads_it() {
    let p = Pier::start();
    let f = Fixture::push(&p);
    let dir = tmpdir();
    let bundle = dir.path().join("bundle.tar");
    export_ok(&p, &["team/app:v1", "team/multi:v2", "-o", bundle.to_str().unwrap()]);

    // skopeo: the single image, and the whole index, byte for byte.
    let single = dir.path().join("single");
    let src = format!("oci-archive:{}:team/app:v1", bundle.display());
    run(Command::new("skopeo").args(["--insecure-policy", "copy", &src]).arg(format!("dir:{}", single.display())));
    let copied = std::fs::read(single.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&copied), f.app.digest());
    for layer in f.app.layer_digests() {
        assert!(single.join(&layer[7..]).exists(), "layer {layer} copied");
    }
    let multi = dir.path().join("multi");
    let src = format!("oci-archive:{}:team/multi:v2", bundle.display());
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all", &src])
        .arg(format!("dir:{}", multi.display())));
    assert_eq!(sha256_digest(&std::fs::read(multi.join("manifest.json")).unwrap()), f.index_digest());
    for child in [&f.amd, &f.arm] {
        let m = std::fs::read(multi.join(format!("{}.manifest.json", &child.digest()[7..]))).unwrap();
        assert_eq!(sha256_digest(&m), child.digest());
    }

    // docker load (a private engine): the images load under their tags with their configs.
    let engine = Dockerd::start();
    let loaded = engine.d(&["load", "-i", bundle.to_str().unwrap()]);
    assert!(loaded.contains("team/app:v1") && loaded.contains("team/multi:v2"), "{loaded}");
    assert_eq!(engine.inspect("team/app:v1", "{{.Id}}"), f.app.config_digest());
    assert_eq!(engine.inspect("team/multi:v2", "{{.Id}}"), f.amd.config_digest());
    assert_eq!(engine.inspect("team/multi:v2", "{{.Architecture}}"), "amd64");
}

#[test]
fn a_delta_against_an_inventory_carries_only_the_new_blobs() {
    // The site holds v1; the connected side has v1 and v2 (sharing a layer).
    let site = Pier::start();
    let base = random_bytes(40_000, 11);
    let base_layer = tar_archive(&[("base.bin", &base)]);
    let v1 = Image::from_layers("app", "amd64", vec![base_layer.clone(), tar_archive(&[("one.txt", b"one")])]);
    let v2 = Image::from_layers("app", "amd64", vec![base_layer.clone(), tar_archive(&[("two.txt", b"two")])]);
    push_image_raw(&site, "team/app", "v1", &v1);
    let dir = tmpdir();
    let inventory = dir.path().join("site.json");
    let out = output(&mut pier_cmd(&site, "inventory", &["-o", inventory.to_str().unwrap(), "--json"]));
    assert!(out.status.success(), "{}", text(&out));
    let inventory_report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let inventory_bytes = std::fs::read(&inventory).unwrap();
    let listed: Value = serde_json::from_slice(&inventory_bytes).unwrap();
    assert_eq!(listed["pierInventoryVersion"], 1);
    let digests: Vec<String> =
        listed["blobs"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    let mut expected: Vec<String> = v1.layer_digests();
    expected.extend([v1.config_digest(), v1.digest()]);
    expected.sort();
    assert_eq!(digests, expected, "every blob and manifest of the site, sorted");
    assert_eq!(inventory_report["blobs"], 4, "{inventory_report}");
    assert_eq!(inventory_report["output"]["files"], json!([inventory]));
    // The same list from the stopped store.
    let mut site = site;
    site.stop();
    let stopped = dir.path().join("stopped.json");
    let out = output(&mut pier_cmd(&site, "inventory", &["-o", stopped.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("inventory: 4 blob(s)"), "{}", text(&out));
    let again: Value = serde_json::from_slice(&std::fs::read(&stopped).unwrap()).unwrap();
    assert_eq!(again["blobs"], listed["blobs"]);

    let p = Pier::start();
    push_image_raw(&p, "team/app", "v1", &v1);
    push_image_raw(&p, "team/app", "v2", &v2);
    let delta = dir.path().join("delta.tar");
    let report = export_ok(
        &p,
        &["team/app:v2", "--exclude-inventory", inventory.to_str().unwrap(), "-o", delta.to_str().unwrap()],
    );
    let (manifest, entries) = check_bundle(&std::fs::read(&delta).unwrap());
    assert_eq!(
        digests_of(&manifest, "blobs"),
        BTreeSet::from([v2.layer_digests()[1].clone(), v2.config_digest(), v2.digest()]),
        "only what the site lacks, and the manifest: {manifest}"
    );
    assert_eq!(manifest["excluded"], json!([{"digest": v2.layer_digests()[0], "size": base_layer.len()}]));
    assert_eq!(manifest["inventory"], sha256_digest(&inventory_bytes));
    assert!(!entries.contains_key("manifest.json"), "docker load needs every layer: no manifest.json in a delta");
    assert_eq!(report["excluded_blobs"], 1, "{report}");
    assert_eq!(report["excluded_bytes"], base_layer.len(), "{report}");
    // The same delta from the stopped store, and the human summary names the bytes saved.
    let mut p = p;
    p.stop();
    let out =
        export(&p, &["team/app:v2", "--exclude-inventory", inventory.to_str().unwrap(), "-o", delta.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 blob(s) left out"), "{}", text(&out));
    let (manifest2, _) = check_bundle(&std::fs::read(&delta).unwrap());
    assert_eq!(manifest2["excluded"], manifest["excluded"]);

    // Not an inventory: refused before anything is written.
    std::fs::write(dir.path().join("bad.json"), b"{\"blobs\": 3}").unwrap();
    let target = dir.path().join("bad.tar");
    let out = export(
        &p,
        &[
            "team/app:v2",
            "--exclude-inventory",
            dir.path().join("bad.json").to_str().unwrap(),
            "-o",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("inventory"), "{}", text(&out));
    assert!(!target.exists());
}

#[test]
fn zstd_volumes_and_stdout_carry_the_same_stream() {
    let p = Pier::start();
    let f = Fixture::push(&p);
    let dir = tmpdir();
    let plain = dir.path().join("plain.tar");
    export_ok(&p, &["team/app:v1", "team/multi:v2", "-o", plain.to_str().unwrap()]);
    let plain_entries = comparable(&std::fs::read(&plain).unwrap());

    // zstd (by file name), cut in volumes of 20 KiB.
    let zst = dir.path().join("bundle.tar.zst");
    let report = export_ok(&p, &["team/app:v1", "team/multi:v2", "--split", "20KiB", "-o", zst.to_str().unwrap()]);
    let files: Vec<PathBuf> =
        report["output"]["files"].as_array().unwrap().iter().map(|f| PathBuf::from(f.as_str().unwrap())).collect();
    assert!(files.len() >= 2, "{report}");
    let mut joined = Vec::new();
    for (i, file) in files.iter().enumerate() {
        assert_eq!(file, &PathBuf::from(format!("{}.{i:03}", zst.display())));
        let data = std::fs::read(file).unwrap();
        if i + 1 < files.len() {
            assert_eq!(data.len(), 20 * 1024, "{file:?}");
        }
        joined.extend(data);
    }
    assert_eq!(report["output"]["zstd"], true);
    assert_eq!(report["output"]["bytes"], joined.len());
    let tar = zstd::stream::decode_all(joined.as_slice()).expect("the volumes concatenate to one zstd stream");
    assert_eq!(tar.len() as u64, report["stream_bytes"].as_u64().unwrap());
    assert_eq!(comparable(&tar), plain_entries);

    // --zstd to stdout, no file at all.
    let out = Command::new(PIER)
        .args(["export", "team/app:v1", "team/multi:v2", "--zstd", "-o", "-", "--config"])
        .arg(&p.config)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tar = zstd::stream::decode_all(out.stdout.as_slice()).unwrap();
    assert_eq!(comparable(&tar), plain_entries);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 2 image(s)"), "the summary goes to stderr");
    let _ = f;
}

/// A bundle's entries with `created` taken out of `pier-bundle.json` (two exports differ only there).
fn comparable(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    tar_entries(tar)
        .into_iter()
        .map(|(name, data)| {
            if name == "pier-bundle.json" {
                let mut v: Value = serde_json::from_slice(&data).unwrap();
                v.as_object_mut().unwrap().remove("created");
                (name, serde_json::to_vec(&v).unwrap())
            } else {
                (name, data)
            }
        })
        .collect()
}

#[test]
fn unknown_references_are_refused_with_no_file_left() {
    let mut p = Pier::start();
    push_image(&p, "team/app", "v1", &[b"layer"]);
    let dir = tmpdir();
    let target = dir.path().join("out.tar");
    let t = target.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["team/nope:v1"], "team/nope:v1: repository not found"),
        (vec!["team/app:v9"], "team/app:v9 not found"),
        (vec!["team/app:v1", "team/nope"], "team/nope: repository not found"),
        (vec!["team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"], "not found"),
        (vec!["Team/App:v1"], "is not a reference"),
    ];
    for daemon in [true, false] {
        if !daemon {
            p.stop();
        }
        for (refs, expected) in &cases {
            let mut args = refs.clone();
            args.extend(["-o", &t]);
            let out = export(&p, &args);
            assert_eq!(out.status.code(), Some(1), "{refs:?} (daemon: {daemon}): {}", text(&out));
            assert!(text(&out).contains(expected), "{refs:?} (daemon: {daemon}): {}", text(&out));
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "no file left: {left:?}");
        }
    }
    // An export request must come with its pipe: without one the daemon refuses it.
    p.serve(&[]);
    let mut s = std::os::unix::net::UnixStream::connect(p.root.join("admin.sock")).unwrap();
    use std::io::Write as _;
    s.write_all(b"{\"command\":\"export\",\"references\":[\"team/app:v1\"],\"all\":false,\"platforms\":[],\"exclude_inventory\":false}\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("export takes 1 file descriptor(s), the request carried 0"), "{answer}");
    // More references than one admin request holds: refused by the command, with the way out.
    let list = dir.path().join("many.txt");
    std::fs::write(&list, (0..3000).map(|i| format!("team/app:tag-number-{i}\n")).collect::<String>()).unwrap();
    let out = export(&p, &["--from-list", list.to_str().unwrap(), "-o", &t]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("3000 references do not fit one request"), "{}", text(&out));
    std::fs::remove_file(&list).unwrap();
    // Usage errors.
    for args in [vec!["team/app:v1"], vec!["-o", &t], vec!["team/app:v1", "-o", "-", "--split", "1M"]] {
        let out = export(&p, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

/// Peak RSS (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` to its end, sampling its peak RSS; (output, peak RSS in KiB).
fn run_measured(cmd: &mut Command) -> (std::process::ExitStatus, u64, String) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn pier export");
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, peak, err)
}

/// A large layer file (mostly zeros, a random block every MiB) written without holding it.
fn write_large_layer(path: &Path, size: usize) -> String {
    use sha2::Digest as _;
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let block = 1 << 20;
    let mut written = 0;
    let mut i = 0;
    while written < size {
        let mut chunk = vec![0u8; block.min(size - written)];
        let noise = random_bytes(4096.min(chunk.len()), i);
        chunk[..noise.len()].copy_from_slice(&noise);
        hasher.update(&chunk);
        file.write_all(&chunk).unwrap();
        written += chunk.len();
        i += 1;
    }
    file.flush().unwrap();
    format!("sha256:{}", hex(&hasher.finalize()))
}

#[test]
fn exporting_a_large_layer_keeps_the_memory_of_the_command_and_the_daemon_bounded() {
    const LAYER: usize = 1 << 30;
    let mut p = Pier::start();
    // Push a 1 GiB layer from a file with skopeo (an OCI layout on disk), never held in memory.
    let layout = tmpdir();
    let blobs = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let staging = layout.path().join("layer");
    let layer = write_large_layer(&staging, LAYER);
    std::fs::rename(&staging, blobs.join(&layer[7..])).unwrap();
    let config = serde_json::to_vec(
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}}),
    )
    .unwrap();
    std::fs::write(blobs.join(&sha256_digest(&config)[7..]), &config).unwrap();
    let manifest = image_manifest((&sha256_digest(&config), config.len()), &[(&layer, LAYER)]);
    write_layout(layout.path(), &[("big", OCI_MANIFEST, &manifest)], &[&config]);
    skopeo_push(&p, layout.path(), "big", "team/big:v1");
    drop(layout);

    let dir = tmpdir();
    let target = dir.path().join("big.tar");
    let daemon_before = peak_rss_kib(p.pid()).unwrap();
    let (status, cli_peak, err) =
        run_measured(&mut pier_cmd(&p, "export", &["team/big:v1", "-o", target.to_str().unwrap()]));
    assert!(status.success(), "{err}\n{}", p.log_tail());
    let daemon_after = peak_rss_kib(p.pid()).unwrap();
    assert!(std::fs::metadata(&target).unwrap().len() > LAYER as u64);
    eprintln!("export of 1 GiB through the daemon: command peak RSS {cli_peak} KiB, daemon peak {daemon_before} -> {daemon_after} KiB");
    assert!(cli_peak < 100 * 1024, "the command's peak RSS {cli_peak} KiB");
    assert!(
        daemon_after.saturating_sub(daemon_before) < 100 * 1024,
        "the daemon grew {daemon_before} -> {daemon_after} KiB"
    );
    std::fs::remove_file(&target).unwrap();

    p.stop();
    let (status, cli_peak, err) =
        run_measured(&mut pier_cmd(&p, "export", &["team/big:v1", "--zstd", "-o", target.to_str().unwrap()]));
    assert!(status.success(), "{err}");
    eprintln!("export of 1 GiB from the store with zstd: peak RSS {cli_peak} KiB");
    assert!(cli_peak < 150 * 1024, "the command's peak RSS {cli_peak} KiB (store and export in one process)");
    let bundle = zstd::stream::read::Decoder::new(std::fs::File::open(&target).unwrap()).unwrap();
    let mut archive = tar::Archive::new(bundle);
    let mut seen = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == format!("blobs/sha256/{}", &layer[7..]) {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = entry.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            assert_eq!(format!("sha256:{}", hex(&hasher.finalize())), layer);
            seen += 1;
        }
    }
    assert_eq!(seen, 1, "the large layer is in the bundle once");
}

#[test]
fn a_sha512_blob_gets_its_long_path_in_the_archive() {
    let p = Pier::start();
    let layer = tar_archive(&[("long.bin", &random_bytes(5000, 21))]);
    let layer_digest = sha512_digest(&layer);
    let r = p.req("POST", &format!("/v2/team/long/blobs/uploads/?digest={layer_digest}"), &[], &layer);
    assert_eq!(r.status, 201, "{}", r.text());
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = push_blob(&p, "team/long", config);
    let manifest = image_manifest((&config_digest, config.len()), &[(&layer_digest, layer.len())]);
    push_manifest(&p, "team/long", "v1", OCI_MANIFEST, &manifest);
    let dir = tmpdir();
    let bundle = dir.path().join("long.tar");
    export_ok(&p, &["team/long:v1", "-o", bundle.to_str().unwrap()]);
    let (listed, entries) = check_bundle(&std::fs::read(&bundle).unwrap());
    let path = format!("blobs/sha512/{}", &layer_digest[7..]);
    assert!(path.len() > 100, "a path ustar cannot hold in its name field");
    assert_eq!(entries.get(&path), Some(&layer), "{:?}", entries.keys().collect::<Vec<_>>());
    assert!(digests_of(&listed, "blobs").contains(&layer_digest));
}
