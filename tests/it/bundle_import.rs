//! `pier import` against the real binary: OCI archives written by skopeo, OCI layout
//! directories, `docker save` archives made by the real engine (plain and gzipped), pier
//! bundles (built here from ARCHITECTURE.md's format, deltas included); through the running
//! daemon (a pipe passed on `admin.sock`) and on a stopped store. Refusals (corrupt and
//! truncated archives, a delta whose base is missing) leave nothing visible: no repository,
//! tag or manifest, no file under `repositories/` or `uploads/`. A `kill -9` of the daemon in
//! the middle of an import leaves nothing either, and the import run again completes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

/// `pier import --config CONFIG ARGS...` (its output whatever its status).
fn import_output(p: &Pier, args: &[&str]) -> Output {
    output(Command::new(PIER).arg("import").arg("--config").arg(&p.config).args(args))
}

/// `pier import --json ...`, which must succeed; the one report of its one input.
#[track_caller]
fn import_json(p: &Pier, args: &[&str]) -> Value {
    let out = run_logged(p, Command::new(PIER).arg("import").arg("--config").arg(&p.config).arg("--json").args(args));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {out}"));
    let imports = v["imports"].as_array().unwrap_or_else(|| panic!("no imports in {v}"));
    assert_eq!(imports.len(), 1, "{v}");
    imports[0].clone()
}

/// `pier import` that must fail; its stderr.
#[track_caller]
fn import_refused(p: &Pier, args: &[&str]) -> String {
    let out = import_output(p, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "pier import {args:?} did not fail with 1: {stderr}\n{}", p.log_tail());
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Nothing of an import is visible: no repository in the catalog (the daemon `p` runs), no
/// file under `repositories/` or `uploads/`, no global blob.
#[track_caller]
fn assert_nothing_visible(p: &Pier) {
    let catalog = p.get("/v2/_catalog");
    assert_eq!(catalog.status, 200, "{}", catalog.text());
    assert_eq!(catalog.json()["repositories"], json!([]), "catalog after a refused import");
    assert_nothing_on_disk(&p.root);
}

#[track_caller]
fn assert_nothing_on_disk(root: &Path) {
    for dir in ["repositories", "uploads", "blobs"] {
        let files = files_under(&root.join(dir));
        assert!(files.is_empty(), "files under {dir}/ after a refused import: {files:?}");
    }
}

/// A manifest whose subject is `subject` (an artifact: a signature-like referrer) with its
/// config and one blob, as (manifest bytes, blobs).
fn referrer(subject: &str, subject_size: usize, media_type: &str, payload: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let config = b"{}".to_vec();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.example.signature.v1", "digest": sha256_digest(payload), "size": payload.len()}],
        "subject": {"mediaType": media_type, "digest": subject, "size": subject_size},
    }))
    .unwrap();
    (manifest, vec![config, payload.to_vec()])
}

/// The digests of the referrers of `subject` in `repo`, as the referrers API lists them.
fn referrers(p: &Pier, repo: &str, subject: &str) -> Vec<String> {
    let r = p.get(&format!("/v2/{repo}/referrers/{subject}"));
    assert_eq!(r.status, 200, "referrers of {subject}: {}", r.text());
    let mut v: Vec<String> =
        r.json()["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// Two platforms in an index, pushed to `p` as `repo:tag`; returns (images, index bytes).
fn push_multi_arch(p: &Pier, repo: &str, tag: &str) -> (Vec<Image>, Vec<u8>) {
    let images = vec![Image::new("amd", "amd64", &[3000, 70_000], 1), Image::new("arm", "arm64", &[5000], 2)];
    for img in &images {
        for b in img.blobs() {
            push_blob(p, repo, b);
        }
        push_manifest(p, repo, &img.digest(), OCI_MANIFEST, &img.manifest);
    }
    let index = image_index(&images.iter().collect::<Vec<_>>());
    push_manifest(p, repo, tag, OCI_INDEX, &index);
    (images, index)
}

/// Asserts `repo` of `p` serves the index `index` as `tag` and every image of it byte for byte.
#[track_caller]
fn assert_index_served(p: &Pier, repo: &str, tag: &str, index: &[u8], images: &[Image]) {
    let r = get_manifest(p, repo, tag);
    assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
    assert!(r.body == index, "index bytes of {repo}:{tag}");
    assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(index).as_str()));
    for img in images {
        assert_blobs_served(p, repo, img);
    }
}

#[test]
fn an_oci_archive_written_by_skopeo_imports_with_every_digest_equal_through_the_daemon_and_without() {
    let source = Pier::start();
    let (images, index) = push_multi_arch(&source, "team/app", "1");
    let work = tmpdir();
    let archive = work.path().join("app.tar");
    skopeo_p(
        &source,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/team/app:1", source.host()),
            &format!("oci-archive:{}:team/app:1", archive.display()),
        ],
    );

    // Into an empty store, through the running daemon.
    let mut target = Pier::start();
    let report = import_json(&target, &[s(&archive)]);
    assert_eq!(report["format"], "OCI archive", "{report}");
    assert_eq!(report["images"][0]["repository"], "team/app");
    assert_eq!(report["images"][0]["tag"], "1");
    assert_eq!(report["images"][0]["digest"], sha256_digest(&index));
    // 2 configs, 3 layers, 2 image manifests, 1 index.
    assert_eq!(report["blobs_imported"], 8, "{report}");
    assert!(target.log().contains("admin: import"), "not imported through the daemon:\n{}", target.log_tail());
    assert_index_served(&target, "team/app", "1", &index, &images);
    // skopeo pulls it all back, byte for byte.
    let back = tmpdir();
    skopeo_p(
        &target,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/team/app:1", target.host()),
            &format!("oci:{}:1", back.path().display()),
        ],
    );
    let layout = read_layout(back.path());
    assert!(layout.tagged("1").1 == index);
    for img in &images {
        layout.assert_has_blobs(img);
    }
    // Again: every blob is in the store already, nothing new is staged.
    let again = import_json(&target, &[s(&archive)]);
    assert_eq!(again["blobs_imported"], 0, "{again}");
    assert_eq!(again["blobs_skipped"], 8, "{again}");
    assert_eq!(again["images"][0]["outcome"], "present", "{again}");

    // With the daemon stopped, on the store itself, renamed on the way in.
    target.stop();
    let renamed = import_json(&target, &["--repo", "team/app=site/app", s(&archive)]);
    assert_eq!(renamed["images"][0]["repository"], "site/app", "{renamed}");
    assert_eq!(renamed["blobs_skipped"], 8, "{renamed}");
    target.serve(&[]);
    assert_index_served(&target, "site/app", "1", &index, &images);
    assert_index_served(&target, "team/app", "1", &index, &images);
    assert_store_blobs_complete(&target.root);
    assert_store_links_consistent(&target.root);
}

#[test]
fn an_oci_layout_directory_imports_with_its_referrers_on_a_stopped_store() {
    let source = Pier::start();
    let (images, index) = push_multi_arch(&source, "team/app", "2");
    let dir = tmpdir();
    skopeo_p(
        &source,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/team/app:2", source.host()),
            &format!("oci:{}:2", dir.path().display()),
        ],
    );
    // A signature of the index and one of the first image, as blobs of the layout (a layout
    // lists referrers nowhere else); a signature of the signature, too.
    let (sig, sig_blobs) = referrer(&sha256_digest(&index), index.len(), OCI_INDEX, b"signature of the index");
    let (img_sig, img_sig_blobs) =
        referrer(&images[0].digest(), images[0].manifest.len(), OCI_MANIFEST, b"signature of amd64");
    let (sig_sig, sig_sig_blobs) = referrer(&sha256_digest(&sig), sig.len(), OCI_MANIFEST, b"countersignature");
    for b in [&sig, &img_sig, &sig_sig]
        .into_iter()
        .chain(sig_blobs.iter())
        .chain(img_sig_blobs.iter())
        .chain(sig_sig_blobs.iter())
    {
        std::fs::write(dir.path().join("blobs/sha256").join(sha256_digest(b).trim_start_matches("sha256:")), b)
            .unwrap();
    }

    let mut target = Pier::new(Options { delete_enabled: true, ..Default::default() });
    // No daemon: the store is created and opened by the command.
    let report = import_json(&target, &["--repo", "site/app", s(dir.path())]);
    assert_eq!(report["referrers"], 3, "{report}");
    assert_eq!(report["images"][0]["repository"], "site/app");
    assert_eq!(report["images"][0]["tag"], "2");
    target.serve(&[]);
    assert_index_served(&target, "site/app", "2", &index, &images);
    assert_eq!(referrers(&target, "site/app", &sha256_digest(&index)), vec![sha256_digest(&sig)]);
    assert_eq!(referrers(&target, "site/app", &images[0].digest()), vec![sha256_digest(&img_sig)]);
    assert_eq!(referrers(&target, "site/app", &sha256_digest(&sig)), vec![sha256_digest(&sig_sig)]);
    let r = get_manifest(&target, "site/app", &sha256_digest(&sig_sig));
    assert!(r.status == 200 && r.body == sig_sig, "{}", r.text());
    // A bare tag names no repository: without --repo the import is refused, nothing lands.
    let other = Pier::start();
    let err = import_refused(&other, &[s(dir.path())]);
    assert!(err.contains("names no repository") && err.contains("--repo"), "{err}");
    assert_nothing_visible(&other);
}

/// A pier bundle as ARCHITECTURE.md "Bundles" describes it: `oci-layout`, `pier-bundle.json`,
/// the blobs, `index.json`. `images`: (repository, tag, media type, manifest bytes).
fn pier_bundle(images: &[(&str, &str, &str, &[u8])], blobs: &[&[u8]], excluded: &[(&str, usize)]) -> Vec<u8> {
    let mut all: Vec<&[u8]> = blobs.to_vec();
    all.extend(images.iter().map(|i| i.3));
    let listed: Vec<Value> = all.iter().map(|b| json!({"digest": sha256_digest(b), "size": b.len()})).collect();
    let bundle = json!({
        "pierBundleVersion": 1,
        "created": "2026-11-28T01:00:00Z",
        "images": images.iter().map(|(repo, tag, mt, m)| json!({
            "repository": repo, "tag": tag, "digest": sha256_digest(m), "mediaType": mt, "size": m.len()
        })).collect::<Vec<_>>(),
        "blobs": listed,
        "excluded": excluded.iter().map(|(d, size)| json!({"digest": d, "size": size})).collect::<Vec<_>>(),
        "inventory": if excluded.is_empty() { Value::Null } else { json!(sha256_digest(b"inventory")) },
    });
    let mut bundle = bundle;
    if excluded.is_empty() {
        let o = bundle.as_object_mut().unwrap();
        o.remove("excluded");
        o.remove("inventory");
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|(repo, tag, mt, m)| json!({
            "mediaType": mt, "digest": sha256_digest(m), "size": m.len(),
            "annotations": {
                REF_NAME: format!("{repo}:{tag}"), "io.containerd.image.name": format!("{repo}:{tag}"),
                "io.pier.repository": repo, "io.pier.tag": tag,
            },
        })).collect::<Vec<_>>(),
    });
    let names: Vec<String> =
        all.iter().map(|b| format!("blobs/sha256/{}", sha256_digest(b).trim_start_matches("sha256:"))).collect();
    let bundle_bytes = serde_json::to_vec(&bundle).unwrap();
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let mut entries: Vec<(&str, &[u8])> =
        vec![("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#), ("pier-bundle.json", &bundle_bytes)];
    entries.extend(names.iter().map(|n| n.as_str()).zip(all.iter().copied()));
    entries.push(("index.json", &index_bytes));
    tar_archive(&entries)
}

#[test]
fn a_pier_bundle_and_a_delta_on_top_import_and_a_delta_without_its_base_is_refused_listing_it() {
    let base = Image::new("base", "amd64", &[20_000, 3000], 5);
    let next = Image::from_layers(
        "next",
        "amd64",
        vec![base.layers[0].clone(), tar_archive(&[("new.txt", nonce().as_bytes())])],
    );
    let work = tmpdir();
    let full = work.path().join("full.tar");
    std::fs::write(&full, pier_bundle(&[("team/base", "1", OCI_MANIFEST, &base.manifest)], &base.blobs(), &[]))
        .unwrap();
    // The delta leaves out the layer the site has from the first bundle.
    let shared = &base.layers[0];
    let delta_blobs: Vec<&[u8]> = next.blobs().into_iter().filter(|b| *b != shared.as_slice()).collect();
    let delta = work.path().join("delta.tar.zst");
    let delta_tar = pier_bundle(
        &[("team/next", "1", OCI_MANIFEST, &next.manifest)],
        &delta_blobs,
        &[(&sha256_digest(shared), shared.len())],
    );
    std::fs::write(&delta, zstd::encode_all(delta_tar.as_slice(), 3).unwrap()).unwrap();

    let p = Pier::start();
    // Without its base: refused before anything is written, the missing digest named.
    let err = import_refused(&p, &[s(&delta)]);
    assert!(err.contains("delta") && err.contains(&sha256_digest(shared)), "{err}");
    assert_nothing_visible(&p);
    // The base, then the delta (zstd, recognised by its magic bytes), in one command.
    let out = run_logged(
        &p,
        Command::new(PIER).arg("import").arg("--config").arg(&p.config).arg("--json").arg(&full).arg(&delta),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["imports"][0]["format"], "pier bundle", "{v}");
    assert_eq!(v["imports"][1]["blobs_imported"], 3, "config, new layer, manifest: {v}");
    assert_image(&p, "team/base", "1", &base);
    assert_image(&p, "team/next", "1", &next);
    assert_store_links_consistent(&p.root);

    // A bundle of two repositories: --repo NAME is ambiguous, --repo OLD=NEW must name one of
    // them; both refused before anything is written.
    let other = Image::new("other", "amd64", &[1000], 6);
    let mut blobs = base.blobs();
    blobs.extend(other.blobs());
    let two = work.path().join("two.tar");
    std::fs::write(
        &two,
        pier_bundle(
            &[("a/one", "1", OCI_MANIFEST, &base.manifest), ("b/two", "1", OCI_MANIFEST, &other.manifest)],
            &blobs,
            &[],
        ),
    )
    .unwrap();
    let empty = Pier::start();
    let err = import_refused(&empty, &["--repo", "x/y", s(&two)]);
    assert!(err.contains("several repositories") && err.contains("a/one") && err.contains("b/two"), "{err}");
    let err = import_refused(&empty, &["--repo", "c/three=x/y", s(&two)]);
    assert!(err.contains("no repository c/three"), "{err}");
    assert_nothing_visible(&empty);
    let renamed = import_json(&empty, &["--repo", "a/one=site/one", s(&two)]);
    let repos: Vec<&str> =
        renamed["images"].as_array().unwrap().iter().map(|i| i["repository"].as_str().unwrap()).collect();
    assert_eq!(repos, vec!["b/two", "site/one"], "{renamed}");
    assert_image(&empty, "site/one", "1", &base);
    assert_image(&empty, "b/two", "1", &other);
}

/// Docker 25's `docker save` writes an OCI layout (content-addressed blobs, index.json with
/// containerd's names) plus its `manifest.json`: read as an OCI archive, named as docker does.
#[test]
fn a_docker_save_archive_in_the_oci_form_of_newer_engines_imports_by_its_docker_names() {
    let img = Image::new("docker25", "amd64", &[4000], 8);
    let blob_name = |b: &[u8]| format!("blobs/sha256/{}", sha256_digest(b).trim_start_matches("sha256:"));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": img.digest(), "size": img.manifest.len(), "annotations": {
            "io.containerd.image.name": "docker.io/library/alpine:3.20",
            REF_NAME: "3.20",
        }}],
    }))
    .unwrap();
    let manifest_json = serde_json::to_vec(&json!([{
        "Config": blob_name(&img.config),
        "RepoTags": ["alpine:3.20"],
        "Layers": img.layers.iter().map(|l| blob_name(l)).collect::<Vec<_>>(),
    }]))
    .unwrap();
    let names: Vec<(String, &[u8])> =
        img.blobs().into_iter().chain([img.manifest.as_slice()]).map(|b| (blob_name(b), b)).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("blobs/", b""), ("blobs/sha256/", b"")];
    entries.extend(names.iter().map(|(n, b)| (n.as_str(), *b)));
    entries.extend([
        ("index.json", index.as_slice()),
        ("manifest.json", manifest_json.as_slice()),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice()),
    ]);
    let work = tmpdir();
    let path = work.path().join("docker25.tar");
    std::fs::write(&path, tar_archive(&entries)).unwrap();
    let p = Pier::start();
    let report = import_json(&p, &[s(&path)]);
    assert_eq!(report["images"][0]["repository"], "alpine", "{report}");
    assert_image(&p, "alpine", "3.20", &img);
}

#[test]
fn corrupt_and_truncated_archives_are_refused_with_nothing_visible() {
    let img = Image::new("corrupt", "amd64", &[200_000, 5000], 9);
    let dir = tmpdir();
    write_image_layout(dir.path(), "1", &img);
    let work = tmpdir();
    let good = work.path().join("good.tar");
    // Written here, so that the archive ends exactly with its two end-of-archive blocks.
    let layout = read_layout(dir.path());
    let names: Vec<(String, Vec<u8>)> = layout
        .blobs
        .iter()
        .map(|(d, b)| (format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), b.clone()))
        .collect();
    let index = std::fs::read(dir.path().join("index.json")).unwrap();
    let mut entries: Vec<(&str, &[u8])> =
        vec![("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#), ("index.json", &index)];
    entries.extend(names.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    std::fs::write(&good, tar_archive(&entries)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // One byte flipped in the middle of the large layer's data.
    let layer = &img.layers[0];
    let at = bytes.windows(64).position(|w| w == &layer[100_000..100_064]).expect("layer bytes in the tar");
    let mut flipped = bytes.clone();
    flipped[at + 10] ^= 0x40;
    let corrupt = work.path().join("corrupt.tar");
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = work.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let cut_at_entry = work.path().join("cut.tar");
    std::fs::write(&cut_at_entry, &bytes[..bytes.len() - 1024]).unwrap();
    let gz = work.path().join("truncated.tar.gz");
    run(Command::new("sh").arg("-c").arg(format!("gzip -c {} | head -c 30000 > {}", s(&good), s(&gz))));

    let p = Pier::start();
    let err = import_refused(&p, &["--repo", "x/y", s(&corrupt)]);
    assert!(
        err.contains(&format!("blobs/sha256/{} is corrupt", img.layer_digests()[0].trim_start_matches("sha256:"))),
        "{err}"
    );
    assert_nothing_visible(&p);
    for t in [&truncated, &cut_at_entry, &gz] {
        let err = import_refused(&p, &["--repo", "x/y", s(t)]);
        assert!(
            err.contains("truncated") || err.contains("ends early") || err.contains("unexpected end"),
            "{}: {err}",
            t.display()
        );
        assert_nothing_visible(&p);
    }
    // Not an archive at all.
    let junk = work.path().join("junk");
    std::fs::write(&junk, random_bytes(4096, 3)).unwrap();
    import_refused(&p, &["--repo", "x/y", s(&junk)]);
    assert_nothing_visible(&p);
    // The good one still imports.
    import_json(&p, &["--repo", "x/y", s(&good)]);
    assert_image(&p, "x/y", "1", &img);
}

/// Hostile entries never reach the file system: names leaving the archive, links, devices.
#[test]
fn hostile_tar_entries_are_never_unpacked() {
    let img = Image::new("hostile", "amd64", &[1000], 4);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        // Names the tar crate would refuse to set go in raw.
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("../../../../tmp/pier-hostile-escape", tar::EntryType::Regular, None, b"escape");
    add("/etc/pier-hostile-abs.json", tar::EntryType::Regular, None, b"{}");
    add("evil-link", tar::EntryType::Symlink, Some("/etc/passwd"), b"");
    add("evil-dev", tar::EntryType::Char, None, b"");
    add("oci-layout", tar::EntryType::Regular, None, br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in img.blobs().into_iter().chain([img.manifest.as_slice()]) {
        add(
            &format!("blobs/sha256/{}", sha256_digest(blob).trim_start_matches("sha256:")),
            tar::EntryType::Regular,
            None,
            blob,
        );
    }
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": img.digest(), "size": img.manifest.len(), "annotations": {REF_NAME: "h/x:1"}}]});
    add("index.json", tar::EntryType::Regular, None, &serde_json::to_vec(&index).unwrap());
    let bytes = b.into_inner().unwrap();
    let work = tmpdir();
    let path = work.path().join("hostile.tar");
    std::fs::write(&path, bytes).unwrap();
    let p = Pier::start();
    import_json(&p, &[s(&path)]);
    assert!(!Path::new("/tmp/pier-hostile-escape").exists());
    assert!(!Path::new("/etc/pier-hostile-abs.json").exists());
    assert_image(&p, "h/x", "1", &img);
    assert!(files_under(&p.root.join("uploads")).is_empty());
}

#[test]
fn a_docker_save_archive_of_the_real_engine_imports_and_pulls_with_the_same_rootfs() {
    let source = Pier::start();
    let img = Image::new("dsave", "amd64", &[30_000, 4000], 21);
    push_image_raw(&source, "team/saved", "1", &img);
    let engine = Dockerd::start();
    let name = format!("{}/team/saved:1", source.host());
    engine.d(&["pull", &name]);
    let id = engine.inspect(&name, "{{.Id}}");
    let work = tmpdir();
    let saved = work.path().join("saved.tar");
    engine.d(&["save", "-o", s(&saved), &name]);
    run(Command::new("gzip").arg("-k").arg(&saved));
    let gz = work.path().join("saved.tar.gz");

    let target = Pier::start();
    let report = import_json(&target, &[s(&gz)]);
    assert_eq!(report["format"], "docker save archive", "{report}");
    assert_eq!(report["images"][0]["repository"], "team/saved", "{report}");
    assert_eq!(report["images"][0]["tag"], "1");
    // The plain tar too, renamed; the same manifest (made the same way from the same files).
    let plain = import_json(&target, &["--repo", "team/saved=team/plain", s(&saved)]);
    assert_eq!(plain["images"][0]["digest"], report["images"][0]["digest"], "{plain}");

    // The engine pulls it back as the same image (config digest = image id, diff ids checked).
    let pulled = format!("{}/team/saved:1", target.host());
    engine.d(&["rmi", &name]);
    engine.d(&["pull", &pulled]);
    assert_eq!(engine.inspect(&pulled, "{{.Id}}"), id, "the engine pulled another image");
    // skopeo (to `dir:`, which keeps manifest and blobs as they are): the layers hash to the
    // config's diff_ids, the same rootfs as pushed.
    let back = tmpdir();
    skopeo_p(
        &target,
        &["copy", "--src-tls-verify=false", &format!("docker://{pulled}"), &format!("dir:{}", back.path().display())],
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(back.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{manifest}");
    let blob = |d: &str| std::fs::read(back.path().join(d.trim_start_matches("sha256:"))).unwrap();
    let config: Value = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let diff_ids: Vec<String> =
        config["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    assert_eq!(diff_ids, img.layer_digests(), "diff_ids of the imported image");
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| sha256_digest(&blob(l["digest"].as_str().unwrap())))
        .collect();
    assert_eq!(layers, img.layer_digests(), "the layers skopeo pulled");
    // podman (private storage) pulls it as the same image too.
    let podman_dir = tmpdir();
    let d = podman_dir.path();
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--storage-driver=vfs")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--cgroup-manager=cgroupfs", "--events-backend=file"])
            .args(args)
            .env("TMPDIR", d);
        run_logged(&target, &mut c)
    };
    podman(&["pull", "--tls-verify=false", &pulled]);
    let podman_id = podman(&["image", "inspect", "--format", "{{.Id}}", &pulled]);
    assert_eq!(format!("sha256:{}", podman_id.trim()), id, "podman pulled another image");
    assert_store_links_consistent(&target.root);
}

/// Writes an OCI layout with one image of one `size`-byte layer (streamed to disk, not held in
/// memory): the layer is a tar with one file of deterministic bytes.
fn write_large_layout(dir: &Path, size: u64) -> String {
    use sha2::Digest as _;
    use std::io::Write;
    let bdir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&bdir).unwrap();
    let tmp = dir.join("layer.tmp");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut h = tar::Header::new_gnu();
    h.set_path("big.bin").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut write = |bytes: &[u8]| {
        hasher.update(bytes);
        file.write_all(bytes).unwrap();
    };
    write(h.as_bytes());
    let chunk = random_bytes(1 << 20, 77);
    let mut left = size;
    let mut n = 0u8;
    while left > 0 {
        let take = left.min(chunk.len() as u64) as usize;
        let mut c = chunk[..take].to_vec();
        c[0] = n;
        n = n.wrapping_add(1);
        write(&c);
        left -= take as u64;
    }
    let pad = ((512 - size % 512) % 512) as usize + 1024;
    write(&vec![0u8; pad]);
    file.flush().unwrap();
    drop(file);
    let layer_digest = format!("sha256:{}", hex(&hasher.finalize()));
    let layer_size = std::fs::metadata(&tmp).unwrap().len();
    std::fs::rename(&tmp, bdir.join(layer_digest.trim_start_matches("sha256:"))).unwrap();
    let config = serde_json::to_vec(
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}),
    )
    .unwrap();
    let manifest = image_manifest((&sha256_digest(&config), config.len()), &[(&layer_digest, layer_size as usize)]);
    for b in [&config, &manifest] {
        std::fs::write(bdir.join(sha256_digest(b).trim_start_matches("sha256:")), b).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256_digest(&manifest), "size": manifest.len(), "annotations": {REF_NAME: "big/one:1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    sha256_digest(&manifest)
}

/// Spawns `pier import DIR` and waits until one of its staging files under `uploads/` holds
/// more than 32 MiB.
fn spawn_import_and_wait_for_staging(p: &Pier, dir: &Path) -> std::process::Child {
    let mut child = Command::new(PIER)
        .arg("import")
        .arg("--config")
        .arg(&p.config)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let uploads = p.root.join("uploads");
    let grew = wait_until(Duration::from_secs(120), || {
        let staged = files_under(&uploads).iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).max();
        staged.unwrap_or(0) > 32 << 20
    });
    if !grew {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no staging file grew within 120 s\n{}", p.log_tail());
    }
    child
}

#[test]
fn kill9_in_the_middle_of_an_import_leaves_nothing_and_the_rerun_completes() {
    let dir = tmpdir();
    let manifest = write_large_layout(dir.path(), 400 << 20);
    let mut p = Pier::start();
    p.stop();
    // No daemon: the command itself is killed; its staging file stays until the next open.
    let mut import = spawn_import_and_wait_for_staging(&p, dir.path());
    import.kill().unwrap();
    import.wait().unwrap();
    assert!(!files_under(&p.root.join("uploads")).is_empty(), "the killed import left no staging file");
    p.serve(&[]);
    assert_nothing_visible(&p);
    // Through the daemon: the daemon is killed.
    let import = spawn_import_and_wait_for_staging(&p, dir.path());
    p.kill9();
    let out = import.wait_with_output().unwrap();
    assert!(!out.status.success(), "the import succeeded although the daemon was killed");
    p.serve(&[]);
    // Recovery swept the staging file; nothing of the import is visible.
    assert_nothing_visible(&p);
    let report = import_json(&p, &[s(dir.path())]);
    assert_eq!(report["images"][0]["digest"], manifest, "{report}");
    let back = tmpdir();
    skopeo_p(
        &p,
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/big/one:1", p.host()),
            &format!("oci:{}:1", back.path().display()),
        ],
    );
    let stored = std::fs::read(dir.path().join("blobs/sha256").join(manifest.trim_start_matches("sha256:"))).unwrap();
    assert!(read_layout(back.path()).tagged("1").1 == stored);
    assert!(files_under(&p.root.join("uploads")).is_empty());
}

/// Split volumes: given all, or the first alone.
#[test]
fn split_volumes_import_given_all_or_the_first_alone() {
    let img = Image::new("vol", "amd64", &[50_000], 31);
    let dir = tmpdir();
    write_image_layout(dir.path(), "v/ol:1", &img);
    let work = tmpdir();
    let tar_path = work.path().join("b.tar");
    run(Command::new("tar").arg("-C").arg(dir.path()).arg("-cf").arg(&tar_path).arg("."));
    let bytes = zstd::encode_all(std::fs::read(&tar_path).unwrap().as_slice(), 1).unwrap();
    let mut volumes: Vec<PathBuf> = Vec::new();
    for (i, chunk) in bytes.chunks(bytes.len() / 3 + 1).enumerate() {
        let v = work.path().join(format!("bundle.{i:03}"));
        std::fs::write(&v, chunk).unwrap();
        volumes.push(v);
    }
    assert_eq!(volumes.len(), 3);
    let p = Pier::start();
    let first = import_json(&p, &[s(&volumes[0])]);
    assert_eq!(first["images"][0]["repository"], "v/ol", "{first}");
    let all: Vec<&str> = volumes.iter().map(|v| s(v)).collect();
    let mut args = vec!["--repo", "v/ol=v/again"];
    args.extend(all);
    let again = import_json(&p, &args);
    assert_eq!(again["images"][0]["repository"], "v/again", "{again}");
    assert_image(&p, "v/ol", "1", &img);
    assert_image(&p, "v/again", "1", &img);
}

/// An import that would take a repository past its quota is refused before anything is
/// committed, through the daemon and on the stopped store alike.
#[test]
fn an_import_past_a_quota_is_refused_with_nothing_visible() {
    let img = Image::new("quota", "amd64", &[400_000], 12);
    let dir = tmpdir();
    write_image_layout(dir.path(), "1", &img);
    let mut p = Pier::start_with(Options {
        delete_enabled: true,
        extra_yaml: String::from("quotas:\n  - repos: \"small/*\"\n    size: 300KB\n"),
        ..Options::default()
    });
    let err = import_refused(&p, &["--repo", "small/app", s(dir.path())]);
    assert!(err.contains("quota"), "{err}");
    assert_nothing_visible(&p);
    p.stop();
    let err = import_refused(&p, &["--repo", "small/app", s(dir.path())]);
    assert!(err.contains("quota"), "{err}");
    assert_nothing_on_disk(&p.root);
    import_json(&p, &["--repo", "large/app", s(dir.path())]);
    p.serve(&[]);
    assert_image(&p, "large/app", "1", &img);
}

/// `pier export` → `pier import`: a multi-arch index with a referrer, zstd in volumes, into an
/// empty store with every digest equal; then a delta against the site's inventory on top.
#[test]
fn export_then_import_round_trips_and_a_delta_on_top_carries_only_new_blobs() {
    let source = Pier::start();
    let (images, index) = push_multi_arch(&source, "team/app", "1");
    let (sig, sig_blobs) = referrer(&sha256_digest(&index), index.len(), OCI_INDEX, b"signature");
    for b in &sig_blobs {
        push_blob(&source, "team/app", b);
    }
    push_manifest(&source, "team/app", &sha256_digest(&sig), OCI_MANIFEST, &sig);
    let work = tmpdir();
    let bundle = work.path().join("bundle.tar.zst");
    let pier = |p: &Pier, args: &[&str]| {
        run_logged(p, Command::new(PIER).arg(args[0]).arg("--config").arg(&p.config).args(&args[1..]))
    };
    pier(&source, &["export", "team/app:1", "-o", s(&bundle), "--split", "64KiB"]);
    let first = work.path().join("bundle.tar.zst.000");
    assert!(work.path().join("bundle.tar.zst.001").is_file(), "no second volume");

    let target = Pier::start();
    let report = import_json(&target, &[s(&first)]);
    assert_eq!(report["format"], "pier bundle", "{report}");
    assert_eq!(report["referrers"], 1, "{report}");
    assert_index_served(&target, "team/app", "1", &index, &images);
    assert_eq!(referrers(&target, "team/app", &sha256_digest(&index)), vec![sha256_digest(&sig)]);

    // A new image sharing a layer; the site's inventory; a delta of only what it lacks.
    let next = Image::from_layers(
        "next",
        "amd64",
        vec![images[0].layers[0].clone(), tar_archive(&[("n.txt", nonce().as_bytes())])],
    );
    push_image_raw(&source, "team/app", "2", &next);
    let inventory = work.path().join("site.json");
    pier(&target, &["inventory", "-o", s(&inventory)]);
    let delta = work.path().join("delta.tar");
    pier(&source, &["export", "team/app:2", "--exclude-inventory", s(&inventory), "-o", s(&delta)]);
    let report = import_json(&target, &[s(&delta)]);
    // The new config, the new layer and the manifest; the shared layer was left out.
    assert_eq!(report["blobs_imported"], 3, "{report}");
    assert_image(&target, "team/app", "2", &next);
    assert_store_links_consistent(&target.root);
}

/// Docker 20.10 saves a layer that two images share under different parents once, and links
/// the second `layer.tar` to the first (a symbolic link in the archive): both images import
/// and the engine pulls both back as they were.
#[test]
fn a_docker_save_archive_of_two_images_sharing_a_layer_through_a_link_imports_both() {
    let source = Pier::start();
    let first = Image::new("shareA", "amd64", &[3000, 20_000], 41);
    let second = Image::from_layers(
        "shareB",
        "amd64",
        vec![tar_archive(&[("other.txt", nonce().as_bytes())]), first.layers[1].clone()],
    );
    push_image_raw(&source, "team/first", "1", &first);
    push_image_raw(&source, "team/second", "1", &second);
    let engine = Dockerd::start();
    let names: Vec<String> =
        ["team/first:1", "team/second:1"].iter().map(|n| format!("{}/{n}", source.host())).collect();
    let mut ids = Vec::new();
    for n in &names {
        engine.d(&["pull", n]);
        ids.push(engine.inspect(n, "{{.Id}}"));
    }
    let work = tmpdir();
    let saved = work.path().join("both.tar");
    engine.d(&["save", "-o", s(&saved), &names[0], &names[1]]);
    let listing = run(Command::new("tar").arg("-tvf").arg(&saved));
    assert!(listing.lines().any(|l| l.starts_with('l') && l.contains("layer.tar")), "no linked layer.tar:\n{listing}");

    let target = Pier::start();
    let report = import_json(&target, &[s(&saved)]);
    let mut repos: Vec<&str> =
        report["images"].as_array().unwrap().iter().map(|i| i["repository"].as_str().unwrap()).collect();
    repos.sort();
    assert_eq!(repos, vec!["team/first", "team/second"], "{report}");
    for (n, id) in names.iter().zip(&ids) {
        engine.d(&["rmi", n]);
        let pulled = n.replace(&source.host(), &target.host());
        engine.d(&["pull", &pulled]);
        assert_eq!(&engine.inspect(&pulled, "{{.Id}}"), id, "{pulled} pulled as another image");
    }
}
