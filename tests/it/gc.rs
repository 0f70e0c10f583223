//! Online garbage collection (`pier gc`) against the real binary: what a deleted image alone
//! used leaves the disk while what others share stays, in the daemon or on a stopped store; the
//! grace period keeps a push in progress whole; `--untagged` keeps what tags need; pushes racing
//! collections never lose an acknowledged image.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

/// `pier gc --config CONFIG ARGS... --json`, which must succeed; its report.
fn gc_report(p: &Pier, args: &[&str]) -> Value {
    let out = output(Command::new(PIER).arg("gc").arg("--config").arg(&p.config).args(args).arg("--json"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pier gc {args:?}: {text}{}\n{}", String::from_utf8_lossy(&out.stderr), p.log_tail());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn global_exists(p: &Pier, digest: &str) -> bool {
    store_blob_path(&p.root, digest).exists()
}

fn repo_link_exists(p: &Pier, repo: &str, digest: &str) -> bool {
    p.root.join("repositories").join(repo).join("blobs/sha256").join(digest.trim_start_matches("sha256:")).exists()
}

/// Pushes config + layers as `repo:tag` (`push_image`); returns the manifest's digest and the
/// config `push_image` made.
fn push(p: &Pier, repo: &str, tag: &str, layers: &[&[u8]]) -> (String, Vec<u8>) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").into_bytes();
    let manifest = push_image(p, repo, tag, layers);
    assert_eq!(p.get(&format!("/v2/{repo}/blobs/{}", sha256_digest(&config))).body, config, "push_image's config");
    (manifest, config)
}

#[test]
fn gc_frees_what_a_deleted_image_alone_used_and_keeps_what_is_shared() {
    let mut p = Pier::start();
    let shared = random_bytes(200_000, 1);
    let only_a = random_bytes(300_000, 2);
    let only_b = random_bytes(100_000, 3);
    let (a, a_config) = push(&p, "app", "a", &[&shared, &only_a]);
    let (b, _) = push(&p, "app", "b", &[&shared, &only_b]);
    let b_bytes = p.get("/v2/app/manifests/b").body;
    assert_eq!(p.req("DELETE", &format!("/v2/app/manifests/{a}"), &[], b"").status, 202);
    let only_a_digest = sha256_digest(&only_a);

    // A dry run reports and changes nothing.
    let dry = gc_report(&p, &["--grace", "0s", "--dry-run"]);
    assert_eq!(
        (dry["dry_run"].clone(), dry["links"].clone(), dry["blobs_freed"].clone()),
        (json!(true), json!(2), json!(2)),
        "{dry}"
    );
    assert!(global_exists(&p, &only_a_digest));

    // The default grace period (1 h) keeps the fresh links.
    let kept = gc_report(&p, &[]);
    assert_eq!((kept["links"].clone(), kept["in_grace"].clone()), (json!(0), json!(2)), "{kept}");
    assert!(global_exists(&p, &only_a_digest));

    let report = gc_report(&p, &["--grace", "0s"]);
    let freed = (only_a.len() + a_config.len()) as u64;
    assert_eq!(report["links"], 2, "A's config and its own layer: {report}");
    assert_eq!(report["blobs_freed"], 2, "{report}");
    assert_eq!(report["bytes_freed"], json!(freed), "{report}");
    for d in [&only_a_digest, &sha256_digest(&a_config)] {
        assert!(!global_exists(&p, d), "{d} is gone from the disk");
        assert!(!repo_link_exists(&p, "app", d), "{d} is gone from the repository layout");
        assert_eq!(p.req("HEAD", &format!("/v2/app/blobs/{d}"), &[], b"").status, 404);
    }
    assert!(global_exists(&p, &sha256_digest(&shared)), "the shared layer stays");
    assert_eq!(p.get("/v2/app/manifests/b").body, b_bytes);
    for l in [&shared, &only_b] {
        assert_eq!(p.get(&format!("/v2/app/blobs/{}", sha256_digest(l))).body, *l, "B pulls whole");
    }
    assert!(p.log().contains("admin: gc (uid 0)"), "the daemon did it:\n{}", p.log_tail());
    assert_eq!(gc_report(&p, &["--grace", "0s"])["links"], 0, "nothing left to collect");
    assert_store_links_consistent(&p.root);

    // On a stopped store the command does the same work itself.
    let (c, _) = push(&p, "app", "c", &[&random_bytes(50_000, 4)]);
    assert_eq!(p.req("DELETE", &format!("/v2/app/manifests/{c}"), &[], b"").status, 202);
    p.stop();
    let direct = gc_report(&p, &["--grace", "0s"]);
    assert_eq!(direct["links"], 2, "{direct}");
    p.serve(&[]);
    assert_eq!(p.get(&format!("/v2/app/manifests/{b}")).body, b_bytes);
    assert_store_links_consistent(&p.root);
}

#[test]
fn a_push_in_progress_keeps_its_blobs_for_the_grace_period() {
    let p = Pier::start();
    let layer = random_bytes(100_000, 5);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let ld = push_blob(&p, "r", &layer);
    let cd = push_blob(&p, "r", config);
    // A collection between the blobs and the manifest of a push keeps the blobs.
    let report = gc_report(&p, &[]);
    assert_eq!((report["links"].clone(), report["in_grace"].clone()), (json!(0), json!(2)), "{report}");
    let manifest = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    push_manifest(&p, "r", "v1", "application/vnd.oci.image.manifest.v1+json", &manifest);

    // Without a grace period, blobs no manifest references go, and a manifest that names one
    // afterwards is refused cleanly.
    let stray = random_bytes(10_000, 6);
    let sd = push_blob(&p, "r", &stray);
    let report = gc_report(&p, &["--grace", "0s"]);
    assert_eq!(report["links"], 1, "{report}");
    let late = image_manifest((&cd, config.len()), &[(&sd, stray.len())]);
    let r =
        p.req("PUT", "/v2/r/manifests/v2", &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], &late);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(p.get("/v2/r/manifests/v1").status, 200, "the finished push is whole");
    assert_eq!(p.get(&format!("/v2/r/blobs/{ld}")).body, layer);
}

#[test]
fn untagged_collection_keeps_what_tags_need() {
    let p = Pier::start();
    let amd = push_image(&p, "multi", "tmp-amd", &[b"amd64 layer"]);
    let arm = push_image(&p, "multi", "tmp-arm", &[b"arm64 layer"]);
    let amd_len = p.get("/v2/multi/manifests/tmp-amd").body.len();
    let arm_len = p.get("/v2/multi/manifests/tmp-arm").body.len();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_len,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_len,
             "platform": {"architecture": "arm64", "os": "linux"}}
        ]
    }))
    .unwrap();
    let index_digest = push_manifest(&p, "multi", "latest", "application/vnd.oci.image.index.v1+json", &index);
    // A signature of the index (a referrer), and an orphan image, both untagged.
    let empty = push_blob(&p, "multi", b"{}");
    let sig_layer = push_blob(&p, "multi", b"signature");
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_layer, "size": 9}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len()}
    }))
    .unwrap();
    let sig_digest = sha256_digest(&sig);
    push_manifest(&p, "multi", &sig_digest, "application/vnd.oci.image.manifest.v1+json", &sig);
    let orphan = push_image(&p, "multi", "orphan", &[b"orphan layer"]);
    for tag in ["tmp-amd", "tmp-arm", "orphan"] {
        assert_eq!(p.req("DELETE", &format!("/v2/multi/manifests/{tag}"), &[], b"").status, 202, "{tag}");
    }

    // Without --untagged manifests stay; with it only the orphan goes.
    assert_eq!(gc_report(&p, &["--grace", "0s"])["manifests"], 0);
    let report = gc_report(&p, &["--grace", "0s", "--untagged"]);
    assert_eq!(report["manifests"], 1, "{report}");
    assert_eq!(report["links"], 2, "the orphan's config and layer: {report}");
    assert_eq!(p.req("HEAD", &format!("/v2/multi/manifests/{orphan}"), &[], b"").status, 404);
    for d in [&amd, &arm, &index_digest, &sig_digest] {
        assert_eq!(p.req("HEAD", &format!("/v2/multi/manifests/{d}"), &[], b"").status, 200, "{d} stays");
    }
    assert_eq!(p.get(&format!("/v2/multi/blobs/{}", sha256_digest(b"arm64 layer"))).body, b"arm64 layer");
    let referrers: Value = serde_json::from_slice(&p.get(&format!("/v2/multi/referrers/{index_digest}")).body).unwrap();
    assert_eq!(referrers["manifests"][0]["digest"], json!(sig_digest), "{referrers}");
    assert_store_links_consistent(&p.root);
}

/// Pushes that reuse the very blobs being collected, in a loop, while collections with a
/// one-second grace period run back to back: each push reuses the layer of an image deleted a
/// round before, skipping its upload when a `HEAD` finds it (as docker and skopeo do), so the
/// collection may take it between that `HEAD` and the manifest. Such a push fails cleanly
/// (`MANIFEST_BLOB_UNKNOWN`); every acknowledged image pulls whole afterwards.
#[test]
fn pushes_racing_collections_never_lose_an_acknowledged_image() {
    let p = Pier::start();
    let base = random_bytes(50_000, 7);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (stop, config) = (stop.clone(), p.config.clone());
        std::thread::spawn(move || {
            let (mut runs, mut collected) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out =
                    output(Command::new(PIER).arg("gc").arg("--config").arg(&config).args(["--grace", "1s", "--json"]));
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let report: Value = serde_json::from_slice(&out.stdout).unwrap();
                collected += report["links"].as_u64().unwrap();
                runs += 1;
            }
            (runs, collected)
        })
    };
    let started = std::time::Instant::now();
    let mut acknowledged = Vec::new();
    let (mut refused, mut round) = (0, 0u64);
    let mut reused = random_bytes(5_000, 99);
    while started.elapsed() < std::time::Duration::from_secs(10) || round < 20 {
        round += 1;
        let own = random_bytes(5_000, 100 + round);
        let config = format!("{{\"round\":{round}}}").into_bytes();
        let mut refs = Vec::new();
        for blob in [&config, &base, &reused, &own] {
            let d = sha256_digest(blob);
            if p.req("HEAD", &format!("/v2/race/blobs/{d}"), &[], b"").status != 200 {
                push_blob(&p, "race", blob);
            }
            refs.push((d, blob.len()));
        }
        let layers: Vec<(&str, usize)> = refs[1..].iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let m = image_manifest((&refs[0].0, config.len()), &layers);
        let tag = format!("t{round}");
        let r = p.req(
            "PUT",
            &format!("/v2/race/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &m,
        );
        match r.status {
            201 => acknowledged.push((tag, sha256_digest(&m), m, vec![config, reused.clone(), own.clone()])),
            400 if r.error_code() == "MANIFEST_BLOB_UNKNOWN" => refused += 1,
            s => panic!("push {round}: {s} {}", r.text()),
        }
        // Every other image is deleted again: its own blobs become garbage, and the next push
        // reuses its layer.
        if round % 2 == 0 {
            if let Some((_, digest, ..)) = acknowledged.pop() {
                assert_eq!(p.req("DELETE", &format!("/v2/race/manifests/{digest}"), &[], b"").status, 202);
            }
        }
        reused = own;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (runs, collected) = collector.join().unwrap();
    let stats = format!(
        "{round} rounds, {} kept, {refused} refused cleanly, {runs} collections took {collected} links",
        acknowledged.len()
    );
    assert!(runs >= 3 && collected > 0, "collections ran and collected during the pushes: {stats}");
    assert!(!acknowledged.is_empty(), "{stats}");
    for (tag, _, m, blobs) in &acknowledged {
        assert_eq!(p.get(&format!("/v2/race/manifests/{tag}")).body, *m, "{tag}");
        for blob in blobs.iter().chain([&base]) {
            assert_eq!(p.get(&format!("/v2/race/blobs/{}", sha256_digest(blob))).body, *blob, "a blob of {tag}");
        }
    }
    assert_store_links_consistent(&p.root);
    eprintln!("{stats}");
}

/// `pier du`: per repository the bytes it links, alone and shared; the store's logical size
/// against its bytes on disk; what a collection would free now; the same from the daemon and
/// from the store read directly.
#[test]
fn du_tells_unique_and_shared_bytes_and_what_gc_would_free() {
    let mut p = Pier::start();
    let shared = random_bytes(100_000, 40);
    let alone = random_bytes(30_000, 41);
    push(&p, "one", "v1", &[&shared, &alone]);
    push(&p, "two", "v1", &[&shared]);
    let du = |p: &Pier, repo: Option<&str>| -> Value {
        let mut cmd = Command::new(PIER);
        cmd.arg("du").arg("--config").arg(&p.config).arg("--json").args(repo);
        let out = output(&mut cmd);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = du(&p, None);
    let repos = report["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 2, "{report}");
    let one = &repos[0];
    assert_eq!(one["repository"], "one");
    let one_manifest = p.get("/v2/one/manifests/v1").body.len();
    let config_len = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"v1\"}".len();
    // The config is the same document in both repositories: shared too.
    assert_eq!(one["shared_bytes"], json!(shared.len() + config_len), "{report}");
    assert_eq!(one["unique_bytes"], json!(alone.len() + one_manifest), "{report}");
    let logical = report["logical_bytes"].as_u64().unwrap();
    let stored = report["stored_bytes"].as_u64().unwrap();
    assert_eq!(logical - stored, (shared.len() + config_len) as u64, "stored once: {report}");
    assert_eq!(report["gc_would_free"]["bytes_freed"], 0, "{report}");

    // One repository alone; the human table; and the same numbers with no daemon running.
    assert_eq!(du(&p, Some("two"))["repositories"].as_array().unwrap().len(), 1);
    let (text_ok, text) = {
        let out = output(Command::new(PIER).arg("du").arg("--config").arg(&p.config));
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(text_ok && text.contains("deduplication") && text.lines().any(|l| l.starts_with("one ")), "{text}");
    p.stop();
    assert_eq!(du(&p, None)["repositories"], report["repositories"], "the same read directly");
}

/// `storage.maintenance.gc` collects on a schedule, in the daemon, with its own grace period.
#[test]
fn scheduled_collection_runs_in_the_daemon() {
    let env = [
        ("REGISTRY_STORAGE_MAINTENANCE_GC_ENABLED", "true"),
        ("REGISTRY_STORAGE_MAINTENANCE_GC_INTERVAL", "1s"),
        // Long enough that a collection between the blobs and the manifest of the push below
        // keeps them.
        ("REGISTRY_STORAGE_MAINTENANCE_GC_GRACE", "3s"),
    ];
    let p = Pier::start_with(Options {
        delete_enabled: true,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::default()
    });
    let (a, _) = push(&p, "app", "a", &[b"only in a"]);
    assert_eq!(p.req("DELETE", &format!("/v2/app/manifests/{a}"), &[], b"").status, 202);
    let layer = sha256_digest(b"only in a");
    // The file goes inside the collection, its log line once the collection is over.
    let collected = || {
        p.log()
            .lines()
            .any(|l| l.contains("scheduled garbage collection: 1 repositories") && !l.contains(" 0 blob link(s)"))
    };
    wait_until(std::time::Duration::from_secs(20), || !global_exists(&p, &layer) && collected());
    assert_store_links_consistent(&p.root);
}

/// `kill -9` in the middle of a collection: after the restart nothing a kept image references is
/// lost, the store is consistent, and the next collection finishes the job.
#[test]
fn kill9_during_a_collection_loses_nothing_referenced() {
    const REPOS: u64 = 150;
    let mut p = Pier::start();
    let shared = random_bytes(20_000, 50);
    let mut kept = Vec::new();
    for i in 0..REPOS {
        let repo = format!("k/r{i:03}");
        let keep = push_image(&p, &repo, "keep", &[&shared, &random_bytes(2_000, 1_000 + i)]);
        let gone = push_image(&p, &repo, "gone", &[&shared, &random_bytes(2_000, 5_000 + i)]);
        assert_eq!(p.req("DELETE", &format!("/v2/{repo}/manifests/{gone}"), &[], b"").status, 202);
        kept.push((repo, keep, p.get(&format!("/v2/k/r{i:03}/manifests/keep")).body));
    }
    let gc = Command::new(PIER)
        .arg("gc")
        .arg("--config")
        .arg(&p.config)
        .args(["--grace", "0s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Repositories are collected in name order: once the first one's garbage is gone, the
    // collection is under way (and far from its end: 149 repositories to go).
    let first = sha256_digest(&random_bytes(2_000, 5_000));
    wait_until(std::time::Duration::from_secs(20), || !global_exists(&p, &first));
    p.kill9();
    let out = gc.wait_with_output().unwrap();
    assert!(!out.status.success(), "the collection was cut off: {}", String::from_utf8_lossy(&out.stdout));
    p.restart();
    let report = gc_report(&p, &["--grace", "0s"]);
    let finished = report["links"].as_u64().unwrap();
    assert!(finished > 0 && finished < 2 * REPOS, "the first run had done part of it: {report}");
    assert_eq!(gc_report(&p, &["--grace", "0s"])["links"], 0, "the second run finished the job");
    for (repo, digest, bytes) in &kept {
        assert_eq!(p.get(&format!("/v2/{repo}/manifests/{digest}")).body, *bytes, "{repo}");
    }
    assert_eq!(p.get(&format!("/v2/k/r000/blobs/{}", sha256_digest(&shared))).body, shared);
    assert_store_links_consistent(&p.root);
}

/// `retention:` on a repository with 30 tags, protected tags, a signature referrer and a
/// cosign-style signature tag: `pier retention` drops what the policy names (a dry run first,
/// changing nothing), and `pier gc --untagged` then frees what only those tags kept.
#[test]
fn retention_drops_the_old_tags_and_gc_frees_them() {
    let p = Pier::start_with(Options {
        delete_enabled: true,
        extra_yaml: String::from("retention:\n  - repos: app\n    keep: 5\n    protect: [latest, semver]\n"),
        ..Options::default()
    });
    let mut digests = Vec::new();
    for i in 0..30 {
        let tag = format!("t{i:02}");
        digests.push(push_image(&p, "app", &tag, &[format!("layer of {tag}").as_bytes()]));
    }
    push_image(&p, "app", "latest", &[b"latest layer"]);
    push_image(&p, "app", "1.0.0", &[b"release layer"]);
    // Signatures, cosign style (a tag naming the signed digest), of a dropped and a kept image.
    let sig_of = |digest: &str| format!("{}.sig", digest.replace(':', "-"));
    push_image(&p, "app", &sig_of(&digests[0]), &[b"signature of t00"]);
    push_image(&p, "app", &sig_of(&digests[29]), &[b"signature of t29"]);
    let tags_now = || -> Vec<String> {
        let v: Value = serde_json::from_slice(&p.get("/v2/app/tags/list").body).unwrap();
        let mut t: Vec<String> =
            v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        t.sort();
        t
    };
    let before = tags_now();
    assert_eq!(before.len(), 34);

    let retention = |extra: &[&str]| -> Value {
        let out = output(Command::new(PIER).arg("retention").arg("--config").arg(&p.config).args(extra).arg("--json"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dry = retention(&["--dry-run"]);
    assert_eq!(dry["tags_dropped"], 26, "t00..t24 and the signature of t00: {dry}");
    assert_eq!(tags_now(), before, "a dry run changes nothing");

    let done = retention(&[]);
    assert_eq!(done["dropped"], dry["dropped"], "{done}");
    let mut expected: Vec<String> =
        ["1.0.0", "latest", "t25", "t26", "t27", "t28", "t29"].iter().map(|s| s.to_string()).collect();
    expected.push(sig_of(&digests[29]));
    expected.sort();
    assert_eq!(tags_now(), expected);
    assert!(p.log().contains("retention: app: dropped 26 tag(s)"), "{}", p.log_tail());

    let freed = gc_report(&p, &["--grace", "0s", "--untagged"]);
    assert_eq!(freed["manifests"], 26, "{freed}");
    assert_eq!(p.req("HEAD", &format!("/v2/app/manifests/{}", digests[0]), &[], b"").status, 404);
    assert_eq!(p.get("/v2/app/manifests/t29").status, 200);
    assert_eq!(p.get(&format!("/v2/app/blobs/{}", sha256_digest(b"layer of t29"))).body, b"layer of t29");
    assert_eq!(p.req("HEAD", &format!("/v2/app/blobs/{}", sha256_digest(b"layer of t00")), &[], b"").status, 404);
    assert_store_links_consistent(&p.root);
}

/// After a full collection, the next ones visit only the repositories changed since (pushes,
/// deletes), and still free what a deleted image used; `--full` visits every repository.
#[test]
fn a_collection_visits_only_what_changed_since_the_last() {
    let p = Pier::start();
    for i in 0..12 {
        push(&p, &format!("team/r{i}"), "v1", &[&random_bytes(20_000, i)]);
    }
    let first = gc_report(&p, &["--grace", "0s"]);
    assert_eq!((first["full"].clone(), first["repositories"].clone()), (json!(true), json!(12)), "{first}");
    let quiet = gc_report(&p, &["--grace", "0s"]);
    assert_eq!((quiet["full"].clone(), quiet["repositories"].clone()), (json!(false), json!(0)), "{quiet}");

    let only = random_bytes(50_000, 99);
    let (doomed, _) = push(&p, "team/r3", "v2", &[&only]);
    assert_eq!(p.req("DELETE", &format!("/v2/team/r3/manifests/{doomed}"), &[], b"").status, 202);
    let r = gc_report(&p, &["--grace", "0s"]);
    assert_eq!((r["full"].clone(), r["repositories"].clone()), (json!(false), json!(1)), "{r}");
    assert_eq!(r["links"], json!(2), "the deleted image's layer and config: {r}");
    assert!(!global_exists(&p, &sha256_digest(&only)));
    let full = gc_report(&p, &["--grace", "0s", "--full"]);
    assert_eq!(
        (full["full"].clone(), full["repositories"].clone(), full["links"].clone()),
        (json!(true), json!(12), json!(0)),
        "{full}"
    );
}
