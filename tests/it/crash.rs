//! Crash safety: the daemon is SIGKILLed at awkward moments (mid chunked upload, mid manifest
//! PUT, right after acknowledged pushes) and restarted on the same data directory. Whatever was
//! acknowledged must still be served byte for byte; nothing partial may become visible; the blob
//! store must never hold an incomplete file; interrupted uploads resume from at least what was
//! acknowledged. Also here: kill -9 right after acknowledged raw-HTTP pushes, between two chunks of
//! an upload, and while writers are in full flight.

use crate::api::{self, assert_status, chunk_size, get_blob_ok, patch_chunk, put_digest, repo_dir, tags_of};
use crate::harness::*;

use serde_json::{json, Value};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// After a crash, `repo:tag` must be absent (404 MANIFEST_UNKNOWN, or NAME_UNKNOWN for a
/// repository that never got a manifest) or serve exactly one of `allowed` completely. Returns
/// the index of the image it serves, if any.
fn assert_absent_or_complete(p: &Pier, repo: &str, tag: &str, allowed: &[&Image]) -> Option<usize> {
    let r = get_manifest(p, repo, tag);
    match r.status {
        404 => {
            let code = r.error_code();
            assert!(code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN", "{repo}:{tag}: {}", r.text());
            None
        }
        200 => {
            let i = allowed.iter().position(|img| img.manifest == r.body).unwrap_or_else(|| {
                panic!(
                    "{repo}:{tag} serves a manifest that was never completely pushed: {:?}\n{}",
                    r.text(),
                    p.log_tail()
                )
            });
            assert_image_served(p, repo, tag, allowed[i]);
            Some(i)
        }
        s => panic!("GET {repo}:{tag} after crash: {s} {}\n{}", r.text(), p.log_tail()),
    }
}

const CHUNK: usize = 4 << 20;
const BIG: usize = 96 << 20;
const ACKED_CHUNKS_BEFORE_KILL: usize = 5;

#[test]
fn kill9_during_chunked_upload() {
    let mut p = Pier::start();
    let img = Image::new("acked", "amd64", &[700_000, 300_000], 51);
    push_with_skopeo(&p, "crash/acked", "v1", &img);

    // A large chunked upload, streamed from a thread.
    let big = random_bytes(BIG, 52);
    let big_digest = sha256_digest(&big);
    let loc = start_upload(&p, "crash/big");
    // The thread reports each acknowledged PATCH as (bytes held, upload location to use next).
    let (tx, rx) = mpsc::channel::<Result<(u64, String), String>>();
    let addr = p.addr;
    let data = big.clone();
    let mut next_loc = loc.clone();
    let uploader = std::thread::spawn(move || {
        let mut sent = 0usize;
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            let start = i * CHUNK;
            let end = start + chunk.len() - 1;
            let cr = format!("{start}-{end}");
            sent = end + 1;
            let headers = [("Content-Type", "application/octet-stream"), ("Content-Range", cr.as_str())];
            let msg = match try_request(addr, "PATCH", &next_loc, &headers, chunk) {
                Ok(r) if r.status == 202 && r.header("range").is_some() => {
                    if let Some(l) = r.header("location") {
                        next_loc = strip_origin(l);
                    }
                    Ok((range_len(&r), next_loc.clone()))
                }
                Ok(r) => Err(format!("PATCH {cr}: {} {:?} {}", r.status, r.headers, r.text())),
                Err(_) => break, // the daemon was killed under us
            };
            let failed = msg.is_err();
            if tx.send(msg).is_err() || failed {
                break;
            }
        }
        sent
    });
    let mut acked = 0u64;
    let mut loc = loc;
    for i in 0..ACKED_CHUNKS_BEFORE_KILL {
        let (held, l) = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("{e}\n{}", p.log_tail()),
            Err(_) => panic!("PATCH not acknowledged\n{}", p.log_tail()),
        };
        assert_eq!(held, ((i + 1) * CHUNK) as u64, "Range after PATCH #{i}");
        acked = held;
        loc = l;
    }
    p.kill9();
    drop(rx);
    let sent = uploader.join().expect("uploader thread") as u64;
    assert!(acked < BIG as u64, "the upload must be interrupted before it completes");
    p.restart();

    // The acknowledged image is intact.
    assert_pulls_identical(&p, "crash/acked", "v1", &img);
    // The interrupted blob is not visible anywhere.
    for repo in ["crash/big", "crash/acked"] {
        let r = p.get(&format!("/v2/{repo}/blobs/{big_digest}"));
        assert_eq!(r.status, 404, "GET of the never-completed blob in {repo}: {}", r.text());
        let r = p.req("HEAD", &format!("/v2/{repo}/blobs/{big_digest}"), &[], b"");
        assert_eq!(r.status, 404, "HEAD of the never-completed blob in {repo}");
    }
    assert!(!store_blob_path(&p.root, &big_digest).exists(), "partial blob in the store");
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);

    // The upload resumes where the server says it is: its session and acknowledged chunks are
    // durable (pier answers 204 after any kill; a 404 would lose acknowledged data).
    let r = p.get(&loc);
    assert_eq!(r.status, 204, "GET upload location after crash: {} {:?}\n{}", r.text(), r.headers, p.log_tail());
    let held = range_len(&r);
    eprintln!("interrupted upload resumes at {held} ({acked} acknowledged, {sent} sent)");
    assert!(held >= acked, "server lost acknowledged upload data: holds {held} bytes, {acked} were acknowledged");
    assert!(held <= sent, "server claims {held} bytes but only {sent} were sent");
    let mut off = held as usize;
    let mut loc = r.header("location").map(strip_origin).unwrap_or(loc);
    while off < BIG {
        let end = (off + CHUNK).min(BIG);
        let cr = format!("{off}-{}", end - 1);
        let r = p.req(
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)],
            &big[off..end],
        );
        assert_eq!(r.status, 202, "resumed PATCH {cr}: {}\n{}", r.text(), p.log_tail());
        assert_eq!(range_len(&r), end as u64, "Range after resumed PATCH {cr}");
        if let Some(l) = r.header("location") {
            loc = strip_origin(l);
        }
        off = end;
    }
    let r = p.req("PUT", &with_digest(&loc, &big_digest), &[], b"");
    assert_eq!(r.status, 201, "PUT completing the resumed upload: {}\n{}", r.text(), p.log_tail());
    let r = p.get(&format!("/v2/crash/big/blobs/{big_digest}"));
    assert_eq!(r.status, 200, "completed blob: {}", r.text());
    assert_eq!(r.body.len(), BIG, "length of the completed blob");
    assert_eq!(sha256_digest(&r.body), big_digest, "content of the completed blob");
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
    assert_pulls_identical(&p, "crash/acked", "v1", &img);
}

#[test]
fn kill9_during_manifest_put() {
    let mut p = Pier::start();
    let repo = "crash/manifest";
    let a = Image::new("mput-a", "amd64", &[200_000, 100_000], 61);
    let b = Image::new("mput-b", "amd64", &[150_000, 50_000], 62);
    push_with_skopeo(&p, repo, "a", &a);
    for blob in b.blobs() {
        push_blob(&p, repo, blob);
    }
    let headers = [("Content-Type", OCI_MANIFEST)];

    // (1) Half of b's manifest for a new tag, then SIGKILL.
    let half = &b.manifest[..b.manifest.len() / 2];
    let conn = send_partial(p.addr, "PUT", &format!("/v2/{repo}/manifests/b"), &headers, half, b.manifest.len());
    // A manifest body is held in memory until complete, so nothing outside shows pier has read
    // the half: this pause lets it arrive before the kill (the outcome must be the same if not).
    std::thread::sleep(Duration::from_millis(300));
    p.kill9();
    drop(conn);
    p.restart();
    assert_eq!(assert_absent_or_complete(&p, repo, "b", &[&b]), None, "a half-sent manifest must not be stored");
    assert_pulls_identical(&p, repo, "a", &a);

    // (2) Half of b's manifest re-pointing the existing tag `a`: `a` still serves a complete image.
    let conn = send_partial(p.addr, "PUT", &format!("/v2/{repo}/manifests/a"), &headers, half, b.manifest.len());
    // (As above: time for the half body to arrive; nothing outside pier shows it.)
    std::thread::sleep(Duration::from_millis(300));
    p.kill9();
    drop(conn);
    p.restart();
    assert_eq!(assert_absent_or_complete(&p, repo, "a", &[&a, &b]), Some(0), "tag a keeps its old manifest");
    assert_pulls_identical(&p, repo, "a", &a);

    // (3) The whole body sent and the daemon killed at once, racing the commit.
    for i in 0..3 {
        let tag = format!("race{i}");
        let conn = send_partial(
            p.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &headers,
            &b.manifest,
            b.manifest.len(),
        );
        // The delay is the test: 0, 5 and 10 ms put the kill before, during or after the commit.
        std::thread::sleep(Duration::from_millis(i * 5));
        p.kill9();
        drop(conn);
        p.restart();
        assert_absent_or_complete(&p, repo, &tag, &[&b]);
        assert_pulls_identical(&p, repo, "a", &a);
    }

    // The repository still works normally, and its on-disk layout is consistent.
    push_manifest(&p, repo, "b", OCI_MANIFEST, &b.manifest);
    assert_pulls_identical(&p, repo, "b", &b);
    settled_layout(&p, repo);
    let tags = assert_layout_consistent(&p.root.join("repositories").join(repo));
    assert!(tags.contains(&"a".to_string()) && tags.contains(&"b".to_string()), "on-disk tags: {tags:?}");
    let (disk, _keep) = disk_layout_copy(&p, repo, "a", false);
    disk.assert_has_image("a", &a);
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn kill9_after_each_push_loop() {
    let mut p = Pier::start();
    let repo = "crash/loop";
    // Every image shares a base layer, so dedup and reference bookkeeping get exercised too.
    let n = nonce();
    let base = tar_archive(&[
        ("pier-e2e/", b""),
        ("pier-e2e/base.txt", format!("shared base {n}\n").as_bytes()),
        ("pier-e2e/base.bin", &random_bytes(400_000, 70)),
    ]);
    let mut images: Vec<Image> = Vec::new();
    for i in 0..5u64 {
        let top = tar_archive(&[
            ("pier-e2e/", b""),
            (&format!("pier-e2e/loop-{i}.txt"), format!("loop image {i} {n}\n").as_bytes()),
            (&format!("pier-e2e/loop-{i}.bin"), &random_bytes(150_000 + 10_000 * i as usize, 71 + i)),
        ]);
        let img = Image::from_layers(&format!("loop-{i}"), "amd64", vec![base.clone(), top]);
        push_with_skopeo(&p, repo, &format!("v{i}"), &img);
        // A second repository gets the same image (cross-repo dedup of every blob).
        push_with_skopeo(&p, &format!("crash/loop-copy-{i}"), "latest", &img);
        images.push(img);
        p.kill9();
        p.restart();
        for (j, img) in images.iter().enumerate() {
            assert_image_served(&p, repo, &format!("v{j}"), img);
            assert_image_served(&p, &format!("crash/loop-copy-{j}"), "latest", img);
        }
    }
    for (j, img) in images.iter().enumerate() {
        assert_pulls_identical(&p, repo, &format!("v{j}"), img);
    }
    let r = p.get(&format!("/v2/{repo}/tags/list"));
    assert_eq!(r.status, 200);
    let mut tags: Vec<String> =
        r.json()["tags"].as_array().expect("tags").iter().map(|t| t.as_str().unwrap().to_string()).collect();
    tags.sort();
    assert_eq!(tags, ["v0", "v1", "v2", "v3", "v4"]);
    settled_layout(&p, repo);
    let on_disk = assert_layout_consistent(&p.root.join("repositories").join(repo));
    assert_eq!(on_disk, ["v0", "v1", "v2", "v3", "v4"], "on-disk index.json tags");
    let (disk, _keep) = disk_layout_copy(&p, repo, "v4", false);
    disk.assert_has_image("v4", &images[4]);
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn kill9_during_skopeo_push() {
    let mut p = Pier::start();
    let repo = "crash/skopeo";
    let before = Image::new("before", "amd64", &[300_000], 81);
    push_with_skopeo(&p, "crash/before", "v1", &before);
    let img = Image::new("midpush", "amd64", &[6 << 20, 6 << 20, 6 << 20], 82);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let src_ref = format!("oci:{}:v1", src.path().display());

    for (round, delay_ms) in [50u64, 300, 900].into_iter().enumerate() {
        let dst_ref = format!("docker://{}/{repo}:v1", p.host());
        let mut child = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--preserve-digests", "--retry-times", "0", "--dest-tls-verify=false"])
            .args([&src_ref, &dst_ref])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run skopeo (is it installed? .ci/run installs it)");
        // The delay is the test: the kill lands early, midway or late in skopeo's push.
        std::thread::sleep(Duration::from_millis(delay_ms));
        p.kill9();
        // skopeo now fails (or finished before the kill); don't let it linger either way.
        if !wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some()) {
            let _ = child.kill();
        }
        let _ = child.wait();
        p.restart();
        let state = assert_absent_or_complete(&p, repo, "v1", &[&img]);
        eprintln!("round {round}: killed after {delay_ms} ms; tag afterwards: {state:?}");
        assert_pulls_identical(&p, "crash/before", "v1", &before);
        assert_store_blobs_complete(&p.root);
        assert_store_links_consistent(&p.root);
    }
    // Pushing again completes the image (reusing whatever blobs did make it).
    push_with_skopeo(&p, repo, "v1", &img);
    assert_pulls_identical(&p, repo, "v1", &img);
    settled_layout(&p, repo);
    assert_layout_consistent(&p.root.join("repositories").join(repo));
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn kill9_during_monolithic_blob_put() {
    let mut p = Pier::start();
    let repo = "crash/monolithic";
    let big = random_bytes(48 << 20, 91);
    let digest = sha256_digest(&big);
    let headers = [("Content-Type", "application/octet-stream")];

    // (1) Half the body, then SIGKILL.
    let loc = start_upload(&p, repo);
    let conn = send_partial(p.addr, "PUT", &with_digest(&loc, &digest), &headers, &big[..big.len() / 2], big.len());
    // Kill once pier has written (nearly) all of the half it got: the upload file holds it but
    // for the last, not yet flushed, write buffer.
    let half = (big.len() / 2) as u64;
    assert!(
        wait_until(Duration::from_secs(30), || upload_bytes_on_disk(&p.root, &loc) + (1 << 20) >= half),
        "pier wrote {} of the {half} bytes sent to {}\n{}",
        upload_bytes_on_disk(&p.root, &loc),
        upload_file(&p.root, &loc).display(),
        p.log_tail()
    );
    p.kill9();
    drop(conn);
    p.restart();
    let r = p.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.status, 404, "half-uploaded blob must not be visible: {}", r.text());
    assert!(!store_blob_path(&p.root, &digest).exists(), "half-uploaded blob in the store");
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);

    // (2) The whole body, killed while pier verifies/commits it.
    for delay in [0u64, 20, 100] {
        let loc = start_upload(&p, repo);
        let conn = send_partial(p.addr, "PUT", &with_digest(&loc, &digest), &headers, &big, big.len());
        // The delay is the test: the kill lands while pier receives, verifies or commits.
        std::thread::sleep(Duration::from_millis(delay));
        p.kill9();
        drop(conn);
        p.restart();
        let r = p.get(&format!("/v2/{repo}/blobs/{digest}"));
        match r.status {
            404 => {}
            200 => {
                assert_eq!(r.body.len(), big.len(), "committed blob length");
                assert_eq!(sha256_digest(&r.body), digest, "committed blob content");
            }
            s => panic!("GET blob after crash: {s} {}", r.text()),
        }
        assert_store_blobs_complete(&p.root);
        assert_store_links_consistent(&p.root);
    }

    // A normal upload works afterwards (or the blob is already there).
    let loc = start_upload(&p, repo);
    let r = p.req("PUT", &with_digest(&loc, &digest), &headers, &big);
    assert_eq!(r.status, 201, "upload after the crashes: {}", r.text());
    let r = p.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), digest);
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn kill9_during_concurrent_pushes() {
    let mut p = Pier::start();
    let n = nonce();
    let base = tar_archive(&[
        ("pier-e2e/", b""),
        ("pier-e2e/base.txt", format!("shared base {n}\n").as_bytes()),
        ("pier-e2e/base.bin", &random_bytes(4 << 20, 120)),
    ]);
    let images: Vec<Image> = (0..3u64)
        .map(|i| {
            let top =
                tar_archive(&[("pier-e2e/", b""), (&format!("pier-e2e/cc-{i}.bin"), &random_bytes(3 << 20, 121 + i))]);
            Image::from_layers(&format!("cc-{i}"), "amd64", vec![base.clone(), top])
        })
        .collect();
    let dirs = image_layout_dirs(&images, "v1");
    for delay_ms in [150u64, 400] {
        let children: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                std::process::Command::new("skopeo")
                    .args(["--insecure-policy", "copy", "--preserve-digests", "--retry-times", "0"])
                    .arg("--dest-tls-verify=false")
                    .arg(format!("oci:{}:v1", d.path().display()))
                    .arg(format!("docker://{}/crash/cc-{i}:v1", p.host()))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("run skopeo (is it installed? .ci/run installs it)")
            })
            .collect();
        // The delay is the test: the kill lands early or midway in three concurrent pushes.
        std::thread::sleep(Duration::from_millis(delay_ms));
        p.kill9();
        for mut c in children {
            if !wait_until(Duration::from_secs(30), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        p.restart();
        for (i, img) in images.iter().enumerate() {
            assert_absent_or_complete(&p, &format!("crash/cc-{i}"), "v1", &[img]);
        }
        assert_store_blobs_complete(&p.root);
        assert_store_links_consistent(&p.root);
    }
    for (i, img) in images.iter().enumerate() {
        push_with_skopeo(&p, &format!("crash/cc-{i}"), "v1", img);
    }
    for (i, img) in images.iter().enumerate() {
        assert_pulls_identical(&p, &format!("crash/cc-{i}"), "v1", img);
    }
    let global = store_blob_path(&p.root, &sha256_digest(&base));
    assert_eq!(nlink(&global), 4, "shared base layer: global + 3 repositories");
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
}

#[test]
fn startup_sweeps_the_links_of_a_repository_metadata_never_recorded() {
    // A kill -9 between a first push's links and its transaction leaves a layout for a repository
    // that is not in the metadata at all (seen in kill9_during_monolithic_blob_put). Simulated
    // here exactly: the start-up sweep must remove its links, so that the unreferenced global
    // file can go too without leaving a link behind.
    let mut p = Pier::start();
    let data = random_bytes(100_000, 95);
    let digest = push_blob(&p, "kept", &data);
    p.kill9();
    let hex = digest.trim_start_matches("sha256:");
    let ghost = p.root.join("repositories/never/recorded/blobs/sha256");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::hard_link(store_blob_path(&p.root, &digest), ghost.join(hex)).unwrap();
    p.restart();
    assert!(!ghost.join(hex).exists(), "link of an unrecorded repository survived the sweep");
    assert_store_links_consistent(&p.root);
    assert_eq!(p.get(&format!("/v2/kept/blobs/{digest}")).body, data);
    assert_eq!(p.get(&format!("/v2/never/recorded/blobs/{digest}")).status, 404);
}

// ---------------------------------------------------------------------------------------------
// kill -9 around the basic API operations (raw HTTP): acknowledged pushes, an upload session
// between two chunks, writers in full flight.

#[test]
fn data_survives_kill9() {
    let mut p = Pier::start();
    let l1 = random_bytes(50_000, 33);
    let l2 = random_bytes(10, 34);
    let d1 = push_image(&p, "a", "v1", &[&l1, &l2]);
    let m1 = p.get("/v2/a/manifests/v1").body;
    push_manifest(&p, "a", "latest", OCI_MANIFEST, &m1);
    let d2 = push_image(&p, "x/y/z", "v2", &[b"nested"]);
    let m2 = p.get("/v2/x/y/z/manifests/v2").body;
    let s = random_bytes(999, 35);
    let sd = sha512_digest(&s);
    assert_status(&p.req("POST", &format!("/v2/a/blobs/uploads/?digest={sd}"), &[], &s), 201);

    p.kill9();
    p.restart();

    get_blob_ok(&p, "a", &sha256_digest(&l1), &l1);
    get_blob_ok(&p, "a", &sha256_digest(&l2), &l2);
    get_blob_ok(&p, "a", &sd, &s);
    get_blob_ok(&p, "x/y/z", &sha256_digest(b"nested"), b"nested");
    for (repo, reference, body) in [
        ("a", "v1", &m1),
        ("a", "latest", &m1),
        ("a", d1.as_str(), &m1),
        ("x/y/z", "v2", &m2),
        ("x/y/z", d2.as_str(), &m2),
    ] {
        let r = p.get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_status(&r, 200);
        assert_eq!(&r.body, body, "{repo}:{reference}");
    }
    assert_eq!(tags_of(&p, "a"), vec!["latest", "v1"]);
    assert_eq!(tags_of(&p, "x/y/z"), vec!["v2"]);
    assert_eq!(p.get("/v2/_catalog").json()["repositories"], json!(["a", "x/y/z"]));
    // Still writable.
    push_image(&p, "a", "v3", &[b"after restart"]);
    assert_eq!(tags_of(&p, "a"), vec!["latest", "v1", "v3"]);
}

#[test]
fn upload_in_progress_across_kill9() {
    let mut p = Pier::start();
    let (loc, r) = api::start_upload(&p, "r");
    let c = chunk_size(&r);
    let data = random_bytes(2 * c, 64);
    let r = patch_chunk(&p, &loc, 0, &data[..c]);
    assert_status(&r, 202);
    let loc = location(&r);
    p.kill9();
    p.restart();
    let s = p.get(&loc);
    let d = sha256_digest(&data);
    // An acknowledged chunk is durable, and so is its session: it resumes at the right offset
    // and produces the right blob.
    assert_status(&s, 204);
    assert_eq!(s.header("range"), Some(format!("0-{}", c - 1).as_str()), "{}", show(&s));
    let r = patch_chunk(&p, &loc, c, &data[c..]);
    assert_status(&r, 202);
    assert_status(&put_digest(&p, &location(&r), &d, b""), 201);
    get_blob_ok(&p, "r", &d, &data);
}

#[test]
fn crash_during_writes_leaves_consistent_state() {
    let mut p = Pier::start();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = p.addr;
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Raw requests: the server may die at any moment, so tolerate failures.
                    let res = std::panic::catch_unwind(|| {
                        let layer = random_bytes(200_000, 1000 * t + i);
                        let d = sha256_digest(&layer);
                        let r = request(addr, "POST", &format!("/v2/r{t}/blobs/uploads/?digest={d}"), &[], &layer);
                        if r.status != 201 {
                            return;
                        }
                        let cfg = format!("{{\"t\":{t},\"i\":{i}}}").into_bytes();
                        let cd = sha256_digest(&cfg);
                        let r = request(addr, "POST", &format!("/v2/r{t}/blobs/uploads/?digest={cd}"), &[], &cfg);
                        if r.status != 201 {
                            return;
                        }
                        let m = image_manifest((&cd, cfg.len()), &[(&d, layer.len())]);
                        request(
                            addr,
                            "PUT",
                            &format!("/v2/r{t}/manifests/t{i}"),
                            &[("Content-Type", OCI_MANIFEST)],
                            &m,
                        );
                    });
                    if res.is_err() {
                        // The server is gone (killed): back off until the test says stop.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Kill once the writers have committed a few images (pier logs each committed manifest PUT),
    // wherever they are then in their next ones.
    let committed =
        |p: &Pier| p.run_log().lines().filter(|l| l.contains("/manifests/t") && l.contains(" 201 ")).count();
    assert!(
        wait_until(Duration::from_secs(60), || committed(&p) >= 8),
        "the writers committed only {} manifests in 60 s\n{}",
        committed(&p),
        p.log_tail()
    );
    p.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    p.restart();

    // Every stored blob file holds exactly the content its name promises.
    let blobs = files_under(&p.root.join("blobs").join("sha256"));
    assert!(!blobs.is_empty(), "nothing was written before the kill");
    for f in &blobs {
        let content = std::fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_digest(&content), format!("sha256:{name}"), "torn blob {f:?}");
    }
    // Every listed tag resolves to a manifest whose bytes match its digest and whose blobs exist.
    let mut tagged = 0;
    for t in 0..4 {
        let repo = format!("r{t}");
        let r = p.get(&format!("/v2/{repo}/tags/list"));
        if r.status == 404 {
            continue;
        }
        assert_status(&r, 200);
        for tag in r.json()["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let m = p.get(&format!("/v2/{repo}/manifests/{tag}"));
            assert_status(&m, 200);
            assert_eq!(m.header("docker-content-digest"), Some(sha256_digest(&m.body).as_str()));
            let v: Value = serde_json::from_slice(&m.body).unwrap();
            for l in v["layers"].as_array().unwrap() {
                let b = p.get(&format!("/v2/{repo}/blobs/{}", l["digest"].as_str().unwrap()));
                assert_status(&b, 200);
                assert_eq!(sha256_digest(&b.body), l["digest"].as_str().unwrap());
            }
            tagged += 1;
        }
        let index: Value = serde_json::from_slice(&std::fs::read(repo_dir(&p, &repo).join("index.json")).unwrap())
            .unwrap_or_else(|e| panic!("{repo}/index.json is not JSON after the crash: {e}"));
        assert!(index["manifests"].is_array());
    }
    assert!(tagged > 0, "no tag was pushed before the kill");
    // And the registry keeps working.
    push_image(&p, "r0", "after", &[b"after crash"]);
}

/// Start-up does not wait for the consistency walk: with 30,000 unreferenced files left in the
/// store (what many crashes could leave), pier answers `GET /v2/` while the walk is still going,
/// and once the walk is over every one of them is gone and the store is consistent.
#[test]
fn the_first_request_does_not_wait_for_the_consistency_walk() {
    let mut p = Pier::start();
    let data = random_bytes(10_000, 96);
    let kept = push_blob(&p, "kept", &data);
    p.kill9();
    let dir = p.root.join("blobs/sha256");
    for i in 0..30_000u32 {
        let name = format!("{:064x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15 + 1);
        std::fs::write(dir.join(name), b"stray").unwrap();
    }
    p.serve(&[]);
    let r = p.get("/v2/");
    assert_eq!(r.status, 200);
    assert!(!p.run_log().contains("consistency walk:"), "the first answer came after the whole walk:\n{}", p.run_log());
    p.wait_walked();
    assert!(p.run_log().contains("30000 unreferenced file(s) removed"), "{}", p.run_log());
    assert_eq!(files_under(&dir).len(), 1, "only the referenced blob stays");
    assert_eq!(p.get(&format!("/v2/kept/blobs/{kept}")).body, data);
    assert_store_links_consistent(&p.root);
}

/// Whether opening the store's `meta.redb` needs a repair (redb repairs a file whose last handle
/// was never closed, reading all of it: the start-up cost of an unclean stop).
fn metadata_needs_repair(root: &std::path::Path) -> bool {
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = repaired.clone();
    let db = redb::Database::builder()
        .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .create(root.join("meta.redb"))
        .expect("open meta.redb");
    drop(db);
    repaired.load(std::sync::atomic::Ordering::SeqCst)
}

/// A clean stop closes the database, whether it comes before the consistency walk began (whose
/// thread held the store and kept the database open past the process exit) or in the middle of
/// it (the walk stops between two steps and goes on at the next start). Before, each such stop
/// left a file that the next start had to repair: ~120 ms of a warm start at 100,000 blobs, and
/// up to 660 ms cold.
#[test]
fn a_clean_stop_closes_the_metadata_so_the_next_start_needs_no_repair() {
    let mut p = Pier::start();
    let data = random_bytes(10_000, 97);
    let kept = push_blob(&p, "kept", &data);
    p.stop();
    assert!(!metadata_needs_repair(&p.root), "stopped before the walk began:\n{}", p.log_tail());

    // A walk with much to do, stopped midway.
    p.kill9();
    let dir = p.root.join("blobs/sha256");
    for i in 0..30_000u32 {
        let name = format!("{:064x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15 + 7);
        std::fs::write(dir.join(name), b"stray").unwrap();
    }
    p.serve(&[]);
    assert_eq!(p.get("/v2/").status, 200);
    std::thread::sleep(Duration::from_millis(1300));
    p.stop();
    assert!(
        p.run_log().contains("consistency walk: stopped by the shutdown"),
        "the walk was under way at the stop:\n{}",
        p.run_log()
    );
    assert!(!metadata_needs_repair(&p.root), "stopped during the walk:\n{}", p.log_tail());
    p.restart();
    assert!(p.run_log().contains("unreferenced file(s) removed"), "{}", p.run_log());
    assert_eq!(files_under(&dir).len(), 1, "the next start's walk finished the job");
    assert_eq!(p.get(&format!("/v2/kept/blobs/{kept}")).body, data);
    assert_store_links_consistent(&p.root);
}
