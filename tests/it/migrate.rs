//! Switching from `registry:2` with its data: a data directory written by the real CNCF
//! Distribution (Debian's `docker-registry`, pushed to with skopeo and raw HTTP) is imported by
//! `pier migrate` and by `pier serve` at start-up (`store::migrate`). Every image must then pull
//! from pier byte for byte; blobs must be hardlinks of registry:2's files (same inode); deleted
//! tags and manifests stay deleted; unfinished uploads are counted, not imported; a corrupt or
//! missing blob is reported and nothing that needs it is imported; a `kill -9` in the middle
//! and a second run converge; and registry:2 must still serve the directory afterwards, whose
//! files pier never changed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Where Distribution's filesystem driver keeps everything below its root directory.
const TREE: &str = "docker/registry/v2";

/// A running Debian `docker-registry` (CNCF Distribution 2.8) on a data directory of the test's,
/// deletes enabled, on a free loopback port. Dropping it kills it.
struct Distribution {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Distribution {
    /// Starts `docker-registry serve` with a config written to `work` and the data in `root`;
    /// waits until `GET /v2/` answers 200.
    fn start(root: &Path, work: &Path) -> Distribution {
        let addr = free_addrs(1)[0];
        let config = work.join("registry2.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            root.display()
        );
        std::fs::write(&config, text).unwrap();
        let log = work.join("registry2.log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run docker-registry: {e} (.ci/run installs the docker-registry package)")
            });
        let mut d = Distribution { child, addr, log };
        let up = wait_until(Duration::from_secs(30), || {
            try_request(addr, "GET", "/v2/", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(up, "docker-registry did not answer on {addr}; its log:\n{}", d.log_text());
        assert!(d.child.try_wait().unwrap().is_none(), "docker-registry exited:\n{}", d.log_text());
        d
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.addr, method, path, headers, body)
    }

    /// `skopeo copy [--all] --preserve-digests oci:DIR:TAG docker://HOST/REPO:TAG`.
    fn push_layout(&self, dir: &Path, tag: &str, repo_tag: &str, all: bool) {
        let src = format!("oci:{}:{tag}", dir.display());
        let dst = format!("docker://{}/{repo_tag}", self.host());
        let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
        if all {
            args.push("--all");
        }
        run_or_explain(Command::new("skopeo").arg("--insecure-policy").args(&args).arg(&src).arg(&dst), || {
            format!("\n--- docker-registry log ---\n{}", self.log_text())
        });
    }

    fn push_image(&self, repo: &str, tag: &str, img: &Image) {
        let src = tmpdir();
        write_image_layout(src.path(), tag, img);
        self.push_layout(src.path(), tag, &format!("{repo}:{tag}"), false);
    }

    /// Pushes an index over `images` as `repo:tag` (`skopeo copy --all`); returns its bytes.
    fn push_index(&self, repo: &str, tag: &str, images: &[&Image]) -> Vec<u8> {
        let src = tmpdir();
        let index = write_index_layout(src.path(), tag, images);
        self.push_layout(src.path(), tag, &format!("{repo}:{tag}"), true);
        index
    }

    /// A blob pushed with raw HTTP (POST, then PUT with the digest: Distribution 2.8 has no
    /// single-POST upload).
    fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256_digest(data);
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(r.status, 202, "POST upload to docker-registry: {}", r.text());
        let loc = strip_origin(&location(&r));
        let r = self.req("PUT", &with_digest(&loc, &d), &[("Content-Type", "application/octet-stream")], data);
        assert_eq!(r.status, 201, "PUT blob to docker-registry: {}", r.text());
        d
    }

    /// Pushes `img` with raw HTTP (config, layers, then the manifest under `tag`).
    fn push_image_http(&self, repo: &str, tag: &str, img: &Image) {
        for b in img.blobs() {
            self.push_blob(repo, b);
        }
        let r =
            self.req("PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Content-Type", OCI_MANIFEST)], &img.manifest);
        assert_eq!(r.status, 201, "PUT manifest to docker-registry: {}", r.text());
    }

    /// Starts an upload and sends part of a blob, never finishing it; returns the location.
    fn leave_unfinished_upload(&self, repo: &str) -> String {
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(r.status, 202, "POST upload: {}", r.text());
        let loc = strip_origin(&location(&r));
        let r = self.req("PATCH", &loc, &[("Content-Type", "application/octet-stream")], &random_bytes(5000, 7));
        assert_eq!(r.status, 202, "PATCH upload: {}", r.text());
        loc
    }

    /// Deletes a manifest by digest (Distribution removes its revision link and every tag
    /// naming it).
    fn delete_manifest(&self, repo: &str, digest: &str) {
        let r = self.req("DELETE", &format!("/v2/{repo}/manifests/{digest}"), &[], b"");
        assert_eq!(r.status, 202, "DELETE manifest on docker-registry: {}", r.text());
    }

    /// `skopeo copy docker://HOST/REPO:TAG oci:DIR:TAG` from this registry.
    fn pull(&self, repo_tag: &str, dir: &Path, tag: &str) -> Layout {
        let src = format!("docker://{}/{repo_tag}", self.host());
        let dst = format!("oci:{}:{tag}", dir.display());
        run_or_explain(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false"])
                .arg(&src)
                .arg(&dst),
            || format!("\n--- docker-registry log ---\n{}", self.log_text()),
        );
        read_layout(dir)
    }

    /// SIGTERM, and waits for it to exit.
    fn stop(mut self) {
        let st = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -TERM docker-registry failed");
        let gone = wait_until(Duration::from_secs(20), || self.child.try_wait().unwrap().is_some());
        assert!(gone, "docker-registry did not exit after SIGTERM");
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file below the registry:2 tree: path → (inode, size, mode, mtime, sha256). Taken before
/// and after pier ran, it shows pier changed nothing of registry:2's (a hardlink changes none
/// of these).
fn registry2_snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, u64, u32, i64, String)> {
    let base = root.join(TREE);
    files_under(&base)
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(&f).unwrap();
            let rel = f.strip_prefix(&base).unwrap().to_path_buf();
            (rel, (m.ino(), m.len(), m.permissions().mode(), m.mtime(), file_sha256(&f)))
        })
        .collect()
}

/// registry:2's `data` file of a blob.
fn registry2_blob(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join(TREE).join("blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

/// `pier migrate --config CONFIG --json EXTRA...` to its end; its report.
#[track_caller]
fn migrate_json(p: &Pier, extra: &[&str]) -> Value {
    let out = run_logged(p, Command::new(PIER).arg("migrate").arg("--config").arg(&p.config).arg("--json").args(extra));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pier migrate --json printed no JSON ({e}):\n{out}"))
}

fn count(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or_else(|| panic!("report has no number {key}: {report:#}"))
}

/// The skipped items of a report as (repository, kind, item, reason).
fn skipped(report: &Value) -> Vec<(String, String, String, String)> {
    report["skipped"]
        .as_array()
        .expect("report lists skipped items")
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            (f("repository"), f("kind"), f("item"), f("reason"))
        })
        .collect()
}

/// Tags of `repo` as pier serves them, sorted.
fn pier_tags(p: &Pier, repo: &str) -> Vec<String> {
    let r = p.get(&format!("/v2/{repo}/tags/list"));
    assert_eq!(r.status, 200, "tags of {repo}: {}", r.text());
    let mut tags: Vec<String> = r.json()["tags"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect());
    tags.sort();
    tags
}

/// Asserts pier's global blob file of every blob of `img` (and its manifest) is registry:2's
/// `data` file: one inode.
#[track_caller]
fn assert_hardlinked(p: &Pier, img: &Image) {
    let digests = img.blobs().into_iter().map(sha256_digest).chain([img.digest()]);
    for d in digests {
        let ours = store_blob_path(&p.root, &d);
        let theirs = registry2_blob(&p.root, &d);
        assert_eq!(inode(&ours), inode(&theirs), "{} is not a hardlink of {}", ours.display(), theirs.display());
    }
}

/// The scene of the main test: several repositories with tags, a tag on two names, a blob
/// shared by two repositories, a multi-arch index, a deleted manifest (and its tag), a tag
/// deleted as Distribution deletes tags, an unfinished upload.
struct Scene {
    v1: Image,
    v2: Image,
    tool: Image,
    amd64: Image,
    arm64: Image,
    index: Vec<u8>,
    deleted: Image,
}

fn build_scene(reg: &Distribution, root: &Path) -> Scene {
    let v1 = Image::new("app-v1", "amd64", &[3000, 70_000], 11);
    let v2 = Image::new("app-v2", "amd64", &[4000], 12);
    // Shares v1's first layer: one file in registry:2, one inode in pier.
    let tool = Image::from_layers(
        "tool",
        "amd64",
        vec![v1.layers[0].clone(), tar_archive(&[("tool/", b""), ("tool/x", nonce().as_bytes())])],
    );
    let amd64 = Image::new("multi-amd64", "amd64", &[2000], 13);
    let arm64 = Image::new("multi-arm64", "arm64", &[2500], 14);
    let deleted = Image::new("app-old", "amd64", &[1500], 15);
    reg.push_image("app", "v1", &v1);
    reg.push_image("app", "v2", &v2);
    reg.push_image("app", "latest", &v2);
    reg.push_image("app", "rc", &v2);
    reg.push_image("app", "old", &deleted);
    reg.push_image("team/tools/tool", "1.0", &tool);
    let index = reg.push_index("multi", "all", &[&amd64, &arm64]);
    // A manifest deleted through the API: its revision link and its tag go, its blobs stay.
    reg.delete_manifest("app", &deleted.digest());
    // A tag deleted as Distribution does it (its `_manifests/tags/<tag>` directory removed; the
    // 2.8 API has no tag delete, 3.x's removes exactly this directory).
    std::fs::remove_dir_all(root.join(TREE).join("repositories/app/_manifests/tags/rc")).unwrap();
    reg.leave_unfinished_upload("app");
    Scene { v1, v2, tool, amd64, arm64, index, deleted }
}

#[test]
fn pier_migrate_imports_registry2_data_in_place_and_registry2_still_serves_it() {
    let mut p = Pier::new(Options { delete_enabled: true, ..Default::default() });
    let reg = Distribution::start(&p.root, p.dir.path());
    let s = build_scene(&reg, &p.root);
    assert_eq!(reg.req("GET", "/v2/app/tags/list", &[], b"").json()["tags"].as_array().map(Vec::len), Some(3));
    reg.stop();
    let before = registry2_snapshot(&p.root);

    // A dry run writes nothing and tells what a real run would do.
    let dry = migrate_json(&p, &["--dry-run"]);
    assert!(!p.root.join("meta.redb").exists(), "a dry run created pier's store");
    assert!(!p.root.join("blobs").exists(), "a dry run created pier's blob directory");
    assert_eq!(dry["dry_run"], true);
    let planned = dry["planned"].as_array().expect("a dry run lists what it would import");
    assert!(planned.iter().any(|i| i["repository"] == "app" && i["kind"] == "tag" && i["item"] == "v1"), "{dry:#}");

    let report = migrate_json(&p, &[]);
    assert_eq!(count(&report, "repositories"), 3, "{report:#}");
    // app: v1, v2 (the deleted one stays out); tool; multi: the index and its two images.
    assert_eq!(count(&report, "manifests"), 6, "{report:#}");
    // app: v1, v2, latest; team/tools/tool: 1.0; multi: all.
    assert_eq!(count(&report, "tags"), 5, "{report:#}");
    assert_eq!(count(&report, "deleted_manifests"), 1, "{report:#}");
    assert_eq!(count(&report, "unfinished_uploads"), 1, "{report:#}");
    assert_eq!(count(&report, "blobs_copied"), 0, "one filesystem: hardlinks only: {report:#}");
    assert_eq!(count(&report, "blobs_shared"), 1, "tool's base layer is app's: {report:#}");
    assert!(count(&report, "blobs_linked") >= 10, "{report:#}");
    assert!(skipped(&report).is_empty(), "{report:#}");
    for key in ["manifests", "tags", "blobs_linked", "blobs_copied", "blobs_shared", "deleted_manifests"] {
        assert_eq!(dry[key], report[key], "the dry run's {key} differs from the real run's");
    }

    // Again: nothing to do but report.
    let again = migrate_json(&p, &[]);
    for key in ["manifests", "tags", "blobs_linked", "blobs_copied", "blobs_shared", "bytes"] {
        assert_eq!(count(&again, key), 0, "a second run imported {key}: {again:#}");
    }
    assert_eq!(count(&again, "manifests_present"), 6, "{again:#}");
    assert_eq!(count(&again, "tags_present"), 5, "{again:#}");

    p.serve(&[]);
    assert_pulls_identical(&p, "app", "v1", &s.v1);
    assert_pulls_identical(&p, "app", "v2", &s.v2);
    assert_pulls_identical(&p, "app", "latest", &s.v2);
    assert_pulls_identical(&p, "team/tools/tool", "1.0", &s.tool);
    let r = get_manifest(&p, "multi", "all");
    assert_eq!(r.status, 200, "GET multi:all: {}", r.text());
    assert!(r.body == s.index, "the index is served byte for byte");
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let out = tmpdir();
    skopeo_p(
        &p,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/multi:all", p.host()),
            &format!("oci:{}:all", out.path().display()),
        ],
    );
    let pulled = read_layout(out.path());
    assert!(pulled.tagged("all").1 == s.index, "skopeo --all pulled another index");
    pulled.assert_has_blobs(&s.amd64);
    pulled.assert_has_blobs(&s.arm64);
    // Deleted stays deleted: the tag removed with its manifest, the tag removed alone, the
    // manifest itself.
    assert_eq!(pier_tags(&p, "app"), ["latest", "v1", "v2"]);
    assert_eq!(get_manifest(&p, "app", &s.deleted.digest()).status, 404, "a deleted manifest came back");
    assert_eq!(get_manifest(&p, "app", "rc").status, 404, "a deleted tag came back");
    assert_eq!(p.get("/v2/_catalog").json()["repositories"], serde_json::json!(["app", "multi", "team/tools/tool"]));
    // In place: every blob and manifest is registry:2's file under one more name.
    for img in [&s.v1, &s.v2, &s.tool, &s.amd64, &s.arm64] {
        assert_hardlinked(&p, img);
    }
    assert_eq!(
        inode(&store_blob_path(&p.root, &sha256_digest(&s.index))),
        inode(&registry2_blob(&p.root, &sha256_digest(&s.index)))
    );
    // pier's own layouts hold (index.json, hardlinks of the global files).
    let (layout, _copy) = disk_layout_copy(&p, "multi", "all", true);
    layout.assert_has_blobs(&s.amd64);
    assert_store_blobs_complete(&p.root);
    p.stop();

    // registry:2's files are as they were (a hardlink changes no inode, size, mode, mtime or
    // content), and registry:2 still serves them.
    assert_eq!(registry2_snapshot(&p.root), before, "pier changed registry:2's files");
    let reg = Distribution::start(&p.root, p.dir.path());
    let out = tmpdir();
    reg.pull("app:v1", out.path(), "v1").assert_has_image("v1", &s.v1);
    reg.stop();
}

#[test]
fn pier_serve_imports_registry2_data_at_start_once_unless_told_not_to() {
    let mut p = Pier::new(Options { delete_enabled: true, ..Default::default() });
    let reg = Distribution::start(&p.root, p.dir.path());
    let img = Image::new("at-start", "amd64", &[5000, 6000], 21);
    let index_images = [Image::new("idx-amd64", "amd64", &[1000], 22), Image::new("idx-arm64", "arm64", &[1100], 23)];
    reg.push_image("web/app", "1", &img);
    let index = reg.push_index("web/multi", "2", &[&index_images[0], &index_images[1]]);
    reg.stop();

    // Switched off (`storage.filesystem.migrate: false`): pier serves its own (empty) store.
    let config = std::fs::read_to_string(&p.config).unwrap();
    let root_line = format!("rootdirectory: {}", p.root.display());
    assert!(config.contains(&root_line), "{config}");
    std::fs::write(&p.config, config.replace(&root_line, &format!("{root_line}\n    migrate: false"))).unwrap();
    p.serve(&[]);
    assert_eq!(p.get("/v2/_catalog").json()["repositories"], serde_json::json!([]), "migrate: false imported");
    p.stop();

    p.write_config();
    let mut notify = Notify::new();
    p.serve(&[("NOTIFY_SOCKET", &notify.env())]);
    let extended = notify.wait_for(Duration::from_secs(5), |m| {
        has_line(m, "STATUS=importing registry:2 data: repository 1/2 (web/app)")
            && value(m, "EXTEND_TIMEOUT_USEC").is_some()
    });
    assert!(extended.is_some(), "no STATUS/EXTEND_TIMEOUT_USEC while importing:\n{}", notify.dump());
    assert!(p.run_log().contains("registry:2 data found"), "{}", p.run_log());
    assert!(p.run_log().contains("migrate: [2/2] web/multi"), "{}", p.run_log());
    assert_pulls_identical(&p, "web/app", "1", &img);
    let r = get_manifest(&p, "web/multi", "2");
    assert!(r.status == 200 && r.body == index, "web/multi:2 after the import at start: {}", r.text());
    for i in &index_images {
        assert_blobs_served(&p, "web/multi", i);
    }
    // Once: the next start does not import again.
    p.stop();
    p.serve(&[]);
    assert!(p.run_log().contains("was imported before"), "{}", p.run_log());
    assert!(!p.run_log().contains("migrate: [1/2]"), "imported again at the second start: {}", p.run_log());
    assert_pulls_identical(&p, "web/app", "1", &img);
    // `pier migrate` refuses to run beside the daemon that has the store open.
    let out = output(Command::new(PIER).arg("migrate").arg("--config").arg(&p.config));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "pier migrate beside pier serve: {stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert_pulls_identical(&p, "web/app", "1", &img);
}

#[test]
fn a_corrupt_or_missing_blob_is_reported_and_nothing_that_needs_it_is_imported() {
    let mut p = Pier::new(Options { delete_enabled: true, ..Default::default() });
    let reg = Distribution::start(&p.root, p.dir.path());
    let good = Image::new("good", "amd64", &[3000], 31);
    let corrupt = Image::new("corrupt", "amd64", &[3000, 4000], 32);
    let missing = Image::new("missing", "amd64", &[3500], 33);
    reg.push_image_http("good", "1", &good);
    reg.push_image_http("bad/corrupt", "1", &corrupt);
    reg.push_image_http("bad/missing", "1", &missing);
    reg.stop();
    // One flipped byte in a layer of `corrupt`, and the data file of `missing`'s layer gone.
    let flipped = corrupt.layer_digests()[1].clone();
    let path = registry2_blob(&p.root, &flipped);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let gone = missing.layer_digests()[0].clone();
    std::fs::remove_file(registry2_blob(&p.root, &gone)).unwrap();

    let report = migrate_json(&p, &[]);
    let skips = skipped(&report);
    let find = |repo: &str, kind: &str, item: &str| {
        skips
            .iter()
            .find(|s| s.0 == repo && s.1 == kind && s.2 == item)
            .unwrap_or_else(|| panic!("no skipped {kind} {item} of {repo} in {report:#}"))
            .3
            .clone()
    };
    assert!(find("bad/corrupt", "blob", &flipped).contains("corrupt"), "{report:#}");
    assert!(find("bad/corrupt", "manifest", &corrupt.digest()).contains(&flipped), "{report:#}");
    assert!(find("bad/corrupt", "tag", "1").contains(&corrupt.digest()), "{report:#}");
    assert!(find("bad/missing", "blob", &gone).contains("missing"), "{report:#}");
    assert!(find("bad/missing", "manifest", &missing.digest()).contains(&gone), "{report:#}");
    assert_eq!(skips.len(), 6, "{report:#}");
    assert_eq!(count(&report, "manifests"), 1, "{report:#}");

    p.serve(&[]);
    assert_pulls_identical(&p, "good", "1", &good);
    for (repo, img) in [("bad/corrupt", &corrupt), ("bad/missing", &missing)] {
        assert_eq!(get_manifest(&p, repo, "1").status, 404, "{repo}:1 was imported");
        assert_eq!(get_manifest(&p, repo, &img.digest()).status, 404, "{repo}@digest was imported");
    }
    assert_eq!(p.get(&format!("/v2/bad/corrupt/blobs/{flipped}")).status, 404, "a corrupt blob became visible");
    // The intact blobs of the broken images were imported (registry:2 serves them too).
    let intact = corrupt.layer_digests()[0].clone();
    assert_eq!(p.get(&format!("/v2/bad/corrupt/blobs/{intact}")).status, 200);
    assert!(!store_blob_path(&p.root, &flipped).exists(), "the corrupt file entered pier's blob store");
    assert_store_blobs_complete(&p.root);
}

#[test]
fn kill9_in_the_middle_of_a_migration_then_running_it_again_converges() {
    const REPOS: usize = 150;
    let mut p = Pier::new(Options { delete_enabled: true, ..Default::default() });
    let reg = Distribution::start(&p.root, p.dir.path());
    let img = Image::new("many", "amd64", &[1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000], 41);
    let other = Image::new("own", "amd64", &[20_000], 42);
    reg.push_image_http("many/r000", "v1", &img);
    reg.push_image_http("many/r001", "own", &other);
    reg.stop();
    // The other repositories as registry:2 would hold them had the image been pushed to each:
    // the same link files (cross-repository pushes share the blob files).
    let repos = p.root.join(TREE).join("repositories/many");
    for i in 1..REPOS {
        let dst = repos.join(format!("r{i:03}"));
        std::fs::create_dir_all(&dst).unwrap();
        run(Command::new("cp").arg("-r").arg(repos.join("r000/_layers")).arg(repos.join("r000/_manifests")).arg(&dst));
    }
    let mut cmd = Command::new(PIER);
    cmd.arg("migrate").arg("--config").arg(&p.config);
    p.spawn_cmd(cmd);
    p.wait_log("migrate: [3/", Duration::from_secs(60));
    p.kill9();
    let first = p.run_log();
    assert!(
        !first.contains(&format!("[{REPOS}/{REPOS}]")),
        "the migration ended before the kill: make the store bigger\n{first}"
    );

    let started = Instant::now();
    let report = migrate_json(&p, &[]);
    let took = started.elapsed();
    assert!(skipped(&report).is_empty(), "{report:#}");
    assert_eq!(count(&report, "manifests") + count(&report, "manifests_present"), REPOS as u64 + 1, "{report:#}");
    assert_eq!(count(&report, "tags") + count(&report, "tags_present"), REPOS as u64 + 1, "{report:#}");
    assert!(count(&report, "manifests_present") >= 2, "the first run's work was lost: {report:#}");
    eprintln!("second run after kill -9: {took:?}: {report}");
    // No duplicates: each blob is one inode whose names are registry:2's, pier's global one and
    // one per repository; nothing is left in pier's upload directory.
    for d in img.blobs().into_iter().map(sha256_digest).chain([img.digest()]) {
        assert_eq!(nlink(&store_blob_path(&p.root, &d)), 2 + REPOS as u64, "link count of {d}");
    }
    p.serve(&[]);
    assert_eq!(std::fs::read_dir(p.root.join("uploads")).unwrap().count(), 0, "staged files left in uploads/");
    for i in [0, 1, REPOS / 2, REPOS - 1] {
        assert_image(&p, &format!("many/r{i:03}"), "v1", &img);
    }
    assert_image(&p, "many/r001", "own", &other);
    assert_store_blobs_complete(&p.root);
}

#[test]
fn registry2_data_on_another_filesystem_is_copied_and_verified() {
    // The registry:2 data on a filesystem of its own: no hardlink can reach pier's store.
    let fs = LoopFs::new(64);
    let mut p = Pier::new(Options { delete_enabled: true, ..Default::default() });
    let old_root = fs.path().join("registry-data");
    let reg = Distribution::start(&old_root, p.dir.path());
    let img = Image::new("elsewhere", "amd64", &[30_000, 2000], 51);
    reg.push_image_http("far/away", "v1", &img);
    reg.stop();
    let before = registry2_snapshot(&old_root);

    let out =
        run_logged(&p, Command::new(PIER).arg("migrate").arg("--config").arg(&p.config).arg("--json").arg(&old_root));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(count(&report, "blobs_copied"), 3, "{report:#}");
    assert_eq!(count(&report, "blobs_linked"), 0, "{report:#}");
    assert_eq!((count(&report, "manifests"), count(&report, "tags")), (1, 1), "{report:#}");
    assert!(skipped(&report).is_empty(), "{report:#}");
    // Copies are pier's own files: read-only, like every blob pier writes.
    for d in img.blobs().into_iter().map(sha256_digest) {
        let mode = std::fs::metadata(store_blob_path(&p.root, &d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444, "mode of the copied blob {d}");
    }
    assert_eq!(registry2_snapshot(&old_root), before, "pier changed registry:2's files");
    p.serve(&[]);
    assert_pulls_identical(&p, "far/away", "v1", &img);
    assert_store_blobs_complete(&p.root);
    p.stop();
}
