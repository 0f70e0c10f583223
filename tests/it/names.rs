//! Repository names: the spec grammar, and hostile names that must neither be accepted nor
//! write anything outside the data directory.

use crate::harness::*;

use serde_json::json;
use std::path::{Path, PathBuf};

fn empty_index() -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap()
}

/// (method, path, headers, body)
type Req<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>);

/// Every kind of request that takes a repository name, for `name` (already as it goes on the
/// wire). Returns (description, response) pairs.
fn hit_all_endpoints(p: &Pier, name: &str) -> Vec<(String, Response)> {
    let data = b"payload for a hostile name".to_vec();
    let d = sha256_digest(&data);
    let idx = empty_index();
    let reqs: Vec<Req> = vec![
        ("GET", format!("/v2/{name}/tags/list"), vec![], vec![]),
        ("GET", format!("/v2/{name}/manifests/latest"), vec![], vec![]),
        ("HEAD", format!("/v2/{name}/manifests/latest"), vec![], vec![]),
        ("GET", format!("/v2/{name}/blobs/{d}"), vec![], vec![]),
        ("GET", format!("/v2/{name}/referrers/{d}"), vec![], vec![]),
        ("POST", format!("/v2/{name}/blobs/uploads/"), vec![], vec![]),
        ("POST", format!("/v2/{name}/blobs/uploads/?digest={d}"), vec![], data.clone()),
        ("POST", format!("/v2/{name}/blobs/uploads/?mount={d}&from=ok"), vec![], vec![]),
        ("PUT", format!("/v2/{name}/manifests/latest"), vec![("Content-Type", OCI_INDEX)], idx.clone()),
        ("DELETE", format!("/v2/{name}/manifests/latest"), vec![], vec![]),
        ("DELETE", format!("/v2/{name}/blobs/{d}"), vec![], vec![]),
    ];
    reqs.into_iter()
        .map(|(m, path, h, body)| {
            let r = p.req(m, &path, &h, &body);
            (format!("{m} {path}"), r)
        })
        .collect()
}

/// A repository `ok` with one image and one blob, so that hostile mounts have a source.
fn seed(p: &Pier) {
    push_image(p, "ok", "latest", &[b"payload for a hostile name"]);
}

/// The names of directories under `<root>/repositories` that hold an OCI layout.
fn repositories_on_disk(root: &Path) -> Vec<String> {
    let base = root.join("repositories");
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if !e.file_type().unwrap().is_dir() {
                continue;
            }
            if e.file_name() == "blobs" && path.parent().is_some_and(|p| p.join("oci-layout").exists()) {
                continue;
            }
            if path.join("oci-layout").exists() {
                out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
            walk(base, &path, out);
        }
    }
    walk(&base, &base, &mut out);
    out.sort();
    out
}

fn all_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    walk(dir, &mut out);
    out
}

#[test]
fn valid_names() {
    let p = Pier::start();
    let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join("/");
    assert_eq!(long.len(), 255);
    let names = [
        "a",
        "0",
        "a/b/c",
        "a.b",
        "a_b",
        "a__b",
        "a-b",
        "a---b",
        "a0/b1.c2_d3__e4-f5",
        "x/y/z/w/v",
        "library/alpine",
        long.as_str(),
    ];
    for n in names {
        let md = push_image(&p, n, "v1", &[n.as_bytes()]);
        let r = p.get(&format!("/v2/{n}/manifests/v1"));
        assert_eq!(r.status, 200, "{n}: {}", show(&r));
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
        let r = p.get(&format!("/v2/{n}/tags/list"));
        assert_eq!(r.status, 200, "{n}: {}", show(&r));
        assert_eq!(r.json(), json!({"name": n, "tags": ["v1"]}));
        let r = p.get(&format!("/v2/{n}/blobs/{}", sha256_digest(n.as_bytes())));
        assert_eq!(r.status, 200, "{n}: {}", show(&r));
        assert!(p.root.join("repositories").join(n).join("oci-layout").exists(), "{n}");
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort();
    assert_eq!(p.get("/v2/_catalog").json()["repositories"], json!(expected));
    let mut on_disk: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    on_disk.sort();
    assert_eq!(repositories_on_disk(&p.root), on_disk);
}

#[test]
fn invalid_names_are_name_invalid() {
    let p = Pier::start();
    seed(&p);
    let too_long = ["a".repeat(64), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join("/");
    assert_eq!(too_long.len(), 256);
    let bad = [
        "Upper",
        "a/B",
        "UPPER/case",
        "-a",
        "a-",
        ".a",
        "a.",
        "_a",
        "a_",
        "a___b",
        "a.-b",
        "a_.b",
        "a..b",
        "a//b",
        "a/",
        "ok/",
        "a%2Fb",
        "a%2fb",
        "%2e%2e",
        "a/%2e%2e/b",
        "a%00b",
        "%00",
        "caf%C3%A9",
        "a%20b",
        "a+b",
        "a:b",
        "a@b",
        too_long.as_str(),
    ];
    for n in bad {
        for (what, r) in hit_all_endpoints(&p, n) {
            assert_eq!(r.status, 400, "{what}: expected 400 NAME_INVALID, got {}", show(&r));
            assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"), "{what}: {}", show(&r));
            if r.body.is_empty() && what.starts_with("HEAD") {
                continue;
            }
            assert_eq!(r.error_code(), "NAME_INVALID", "{what}: {}", show(&r));
        }
    }
    assert_eq!(repositories_on_disk(&p.root), vec!["ok".to_string()]);
    assert_eq!(p.get("/v2/_catalog").json()["repositories"], json!(["ok"]));
}

#[test]
fn hostile_paths_never_escape_the_data_dir() {
    let p = Pier::start();
    seed(&p);
    let tmpdir = p.root.parent().unwrap().to_path_buf();
    let before: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().flatten().map(|e| e.file_name()).collect();
        v.sort();
        v
    };
    let marker = format!(
        "pierpwn{}x{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let m = marker.as_str();
    let up = "../".repeat(12);
    let names = [
        format!("a/../../../../{m}"),
        format!("a/{up}{m}"),
        format!("{up}{m}"),
        format!("../{m}"),
        "..".to_string(),
        ".".to_string(),
        "a/./b".to_string(),
        "a/../ok".to_string(),
        "a/../../etc".to_string(),
        format!("..%2f..%2f..%2f{m}"),
        format!("..%2F..%2F..%2F..%2F{m}"),
        format!("%2e%2e/%2e%2e/%2e%2e/{m}"),
        format!("%2E%2E%2F%2E%2E%2F{m}"),
        format!("a%2f..%2f..%2f..%2f{m}"),
        format!("a/%2e%2e/%2e%2e/%2e%2e/{m}"),
        format!("ok%2f..%2f..%2f{m}"),
        format!("%2f{m}"),
        format!("/{m}"),
        format!("{m}%00"),
        format!("{m}%00/../x"),
        format!("caf\u{e9}/{m}"),
        format!("\u{2024}\u{2024}/{m}"),
        format!("{m}\\..\\..\\x"),
        format!("{m}%5c..%5c..%5cx"),
    ];
    for n in &names {
        for (what, r) in hit_all_endpoints(&p, n) {
            // Every one of these requests routes to `/v2/<name>/...` with a name outside the
            // grammar: 400 NAME_INVALID (HEAD: the status alone).
            assert_eq!(r.status, 400, "{what}: {}", show(&r));
            if !what.starts_with("HEAD ") {
                assert_eq!(r.error_code(), "NAME_INVALID", "{what}: {}", show(&r));
            }
        }
    }

    // Hostile digests, upload ids and tags in a valid repository.
    let data = b"x".to_vec();
    let d = sha256_digest(&data);
    // Each answer is what the spec gives for the part that is wrong: a digest or tag outside its
    // grammar (400), an upload id that names no session (404 BLOB_UPLOAD_UNKNOWN), or a path
    // that is no endpoint once its `..` segments stay literal (404 UNSUPPORTED).
    let (unknown_upload, no_endpoint) = ((404, "BLOB_UPLOAD_UNKNOWN"), (404, "UNSUPPORTED"));
    let (bad_digest, bad_tag) = ((400, "DIGEST_INVALID"), (400, "TAG_INVALID"));
    let hostile: Vec<(&str, String, Vec<u8>, Expected)> = vec![
        ("GET", "/v2/ok/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd".into(), vec![], bad_digest),
        ("GET", "/v2/ok/blobs/../../../etc/passwd".into(), vec![], no_endpoint),
        ("GET", format!("/v2/ok/blobs/sha256%2f..%2f..%2f{m}"), vec![], bad_digest),
        ("PUT", format!("/v2/ok/blobs/uploads/..%2f..%2f..%2f{m}?digest={d}"), data.clone(), unknown_upload),
        ("PUT", format!("/v2/ok/blobs/uploads/../../../{m}?digest={d}"), data.clone(), no_endpoint),
        ("PATCH", format!("/v2/ok/blobs/uploads/..%2f..%2f{m}"), data.clone(), unknown_upload),
        ("GET", format!("/v2/ok/blobs/uploads/..%2f..%2f{m}"), vec![], unknown_upload),
        ("DELETE", "/v2/ok/blobs/uploads/..%2f..%2f..%2fblobs".into(), vec![], unknown_upload),
        ("PUT", format!("/v2/ok/manifests/..%2f..%2f{m}"), empty_index(), bad_tag),
        ("PUT", "/v2/ok/manifests/..".into(), empty_index(), bad_tag),
        ("PUT", "/v2/ok/manifests/.".into(), empty_index(), bad_tag),
        ("PUT", format!("/v2/ok/manifests/{m}%00"), empty_index(), bad_tag),
        ("GET", "/v2/ok/referrers/..%2f..%2fx".into(), vec![], bad_digest),
    ];
    for (method, path, body, (status, code)) in hostile {
        let hdrs: Vec<(&str, &str)> =
            if method == "PUT" && path.contains("/manifests/") { vec![("Content-Type", OCI_INDEX)] } else { vec![] };
        let r = p.req(method, &path, &hdrs, &body);
        assert_eq!((r.status, r.error_code().as_str()), (status, code), "{method} {path}: {}", show(&r));
    }
    // Mount source names are names too.
    for from in [format!("..%2f..%2f{m}"), "../ok".to_string(), "OK".to_string(), format!("ok/../../{m}")] {
        let ld = sha256_digest(b"payload for a hostile name");
        let r = p.req("POST", &format!("/v2/victim/blobs/uploads/?mount={ld}&from={from}"), &[], b"");
        assert_eq!((r.status, r.error_code().as_str()), (400, "NAME_INVALID"), "mount from {from}: {}", show(&r));
        assert_ne!(p.get(&format!("/v2/victim/blobs/{ld}")).status, 200, "mounted from {from}");
    }

    // Nothing escaped: no marker anywhere, the temp dir unchanged, only valid repositories.
    for dir in [PathBuf::from("/tmp"), PathBuf::from("/"), tmpdir.clone(), std::env::temp_dir()] {
        assert!(!dir.join(m).exists(), "{:?} was created", dir.join(m));
    }
    let after: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().flatten().map(|e| e.file_name()).collect();
        v.sort();
        v
    };
    assert_eq!(before, after, "entries appeared next to the data dir");
    for path in all_paths(&p.root) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(m), "{path:?} was created");
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) && name != ".." && name != ".",
            "suspicious file name {path:?}"
        );
    }
    let repos = repositories_on_disk(&p.root);
    assert!(repos.iter().all(|r| r == "ok" || r == "victim"), "unexpected repositories on disk: {repos:?}");
    for r in &repos {
        let dir = p.root.join("repositories").join(r);
        assert!(dir.canonicalize().unwrap().starts_with(p.root.canonicalize().unwrap()));
    }
    let r = p.get("/v2/_catalog");
    assert_eq!(r.status, 200);
    for repo in r.json()["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        assert!(repo == "ok" || repo == "victim", "catalog lists {repo:?}");
    }
    // The legitimate repository is intact.
    let r = p.get("/v2/ok/manifests/latest");
    assert_eq!(r.status, 200, "{}", show(&r));
}

/// The status and OCI error code a request must get.
type Expected = (u16, &'static str);

#[test]
fn raw_dot_segments_in_request_target() {
    // Request targets that a normalising client would rewrite: sent verbatim here.
    let p = Pier::start();
    seed(&p);
    let d = sha256_digest(b"payload for a hostile name");
    // The segments stay literal: a path that is no endpoint (404 UNSUPPORTED), or `ok/../..`
    // taken as a repository name outside the grammar (400 NAME_INVALID).
    let no_endpoint = (404, "UNSUPPORTED");
    for (path, want) in [
        ("/v2/../etc/passwd".to_string(), no_endpoint),
        ("/v2/./ok/tags/list/..".to_string(), no_endpoint),
        ("/v2/ok/../../tags/list".to_string(), (400, "NAME_INVALID")),
        (format!("/v2/ok/blobs/../../ok/blobs/{d}/../../../../etc/passwd"), no_endpoint),
        ("/v2/%2e%2e/%2e%2e/etc/passwd".to_string(), no_endpoint),
        ("/../../../etc/passwd".to_string(), no_endpoint),
        ("/v2/ok/tags/list/../../../../../../etc/passwd".to_string(), no_endpoint),
    ] {
        let r = p.get(&path);
        assert_eq!((r.status, r.error_code().as_str()), want, "GET {path}: {}", show(&r));
        assert!(!r.text().contains("root:"), "GET {path} served /etc/passwd");
    }
}

#[test]
fn reserved_layout_components() {
    // pier keeps each repository as an OCI image layout, so `<repo>/blobs`, `<repo>/index.json`
    // and `<repo>/oci-layout` would collide with the parent's layout: they must be refused (or at
    // least never corrupt the parent repository).
    let p = Pier::start();
    let md = push_image(&p, "a", "v1", &[b"parent layer"]);
    settled_layout(&p, "a");
    let idx_before = std::fs::read(p.root.join("repositories/a/index.json")).unwrap();
    for n in ["a/blobs", "a/index.json", "a/oci-layout", "a/blobs/sha256"] {
        let r = p.req("PUT", &format!("/v2/{n}/manifests/x"), &[("Content-Type", OCI_INDEX)], &empty_index());
        assert_eq!(r.status, 400, "{n}: {}", show(&r));
        assert_eq!(r.error_code(), "NAME_INVALID", "{n}");
        let r = p.req("POST", &format!("/v2/{n}/blobs/uploads/?digest={}", sha256_digest(b"zz")), &[], b"zz");
        assert_eq!(r.status, 400, "{n}: {}", show(&r));
    }
    assert_eq!(std::fs::read(p.root.join("repositories/a/index.json")).unwrap(), idx_before);
    let r = p.get("/v2/a/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.root.join("repositories/a/oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
}
