//! Authentication and authorization against the real `pier` binary over real sockets: htpasswd
//! (bcrypt) users, the `access` rules and the action every route needs, anonymous pulls, catalog
//! filtering, malformed credentials, hot reload (polling and SIGHUP), start-up refusals, the
//! slowdown after repeated failures, `pier htpasswd`, read-only mode and the credential cache;
//! skopeo end to end. Password files are made with apache2-utils `htpasswd` (required: tests
//! fail, never skip, without it).

use crate::harness::*;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REALM: &str = "pier-test";
const ALL: &[&str] = &["pull", "push", "delete"];

/// `(user, repository globs, actions)`: one entry of the `access` section.
type Rule<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);

// ---------------------------------------------------------------------------------------------
// Helpers: passwords, htpasswd files, configuration

/// Every test user's password: distinctive, so the log can be searched for it.
fn pw(user: &str) -> String {
    format!("Pw.{user}.q8Zr!3")
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

/// One `user:$2y$...` line from apache2-utils `htpasswd -nbB`.
fn htpasswd_line(user: &str, pass: &str, cost: u32) -> String {
    let out = run(Command::new("htpasswd").args(["-nbB", "-C", &cost.to_string(), user, pass]));
    let line = out.trim().to_string();
    assert!(line.starts_with(&format!("{user}:$2")), "unexpected htpasswd output {out:?}");
    line
}

/// A password file in its own temporary directory.
struct Users {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Users {
    /// Every user gets [`pw`]`(user)`, bcrypt cost 4 (fast).
    fn new(users: &[&str]) -> Users {
        Self::with_cost(users, 4)
    }

    fn with_cost(users: &[&str], cost: u32) -> Users {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let mut text = String::from("# pier test users\n\n");
        for u in users {
            text.push_str(&htpasswd_line(u, &pw(u), cost));
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        Users { _dir: dir, path }
    }
}

fn auth_yaml(path: &Path) -> String {
    format!("auth:\n  htpasswd:\n    realm: {REALM}\n    path: {}\n", path.display())
}

fn access_yaml(rules: &[Rule]) -> String {
    let mut s = String::from("access:\n");
    for (user, repos, actions) in rules {
        let repos: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
        s.push_str(&format!(
            "  - user: \"{user}\"\n    repos: [{}]\n    actions: [{}]\n",
            repos.join(", "),
            actions.join(", ")
        ));
    }
    s
}

/// pier with htpasswd auth, deletes enabled, and the given `access` rules (none: no section).
fn start(users: &Users, rules: Option<&[Rule]>) -> Pier {
    start_env(users, rules, vec![])
}

fn start_env(users: &Users, rules: Option<&[Rule]>, env: Vec<(String, String)>) -> Pier {
    let mut extra_yaml = auth_yaml(&users.path);
    if let Some(rules) = rules {
        extra_yaml.push_str(&access_yaml(rules));
    }
    Pier::start_with(Options { delete_enabled: true, extra_yaml, env, ..Default::default() })
}

// ---------------------------------------------------------------------------------------------
// Helpers: requests and assertions

/// A request as `who` (`None`: no `Authorization` header), with [`pw`] as the password.
fn call(p: &Pier, who: Option<&str>, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let auth = who.map(|u| basic(u, &pw(u)));
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    p.req(method, path, &h, body)
}

fn get_as(p: &Pier, who: Option<&str>, path: &str) -> Response {
    call(p, who, "GET", path, &[], b"")
}

fn with_auth(p: &Pier, auth: &str, method: &str, path: &str) -> Response {
    p.req(method, path, &[("Authorization", auth)], b"")
}

#[track_caller]
fn assert_api_version(r: &Response, ctx: &str) {
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "{ctx}: no Docker-Distribution-Api-Version: {}",
        show(r)
    );
}

/// An OCI error body with `code` (HEAD responses have no body to check).
#[track_caller]
fn assert_code(r: &Response, method: &str, code: &str, ctx: &str) {
    if method == "HEAD" {
        return;
    }
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "{ctx}: error Content-Type {ct:?}: {}", show(r));
    let v: Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{ctx}: error body not JSON ({e}): {}", show(r)));
    assert_eq!(v["errors"][0]["code"].as_str(), Some(code), "{ctx}: {}", show(r));
    assert!(v["errors"][0]["message"].is_string(), "{ctx}: error without message: {}", show(r));
}

/// 401 `UNAUTHORIZED` with the Basic challenge for [`REALM`].
#[track_caller]
fn assert_unauthorized(r: &Response, method: &str, ctx: &str) {
    assert_unauthorized_realm(r, method, REALM, ctx);
}

#[track_caller]
fn assert_unauthorized_realm(r: &Response, method: &str, realm: &str, ctx: &str) {
    assert_eq!(r.status, 401, "{ctx}: expected 401: {}", show(r));
    let challenge =
        r.header("www-authenticate").unwrap_or_else(|| panic!("{ctx}: 401 without WWW-Authenticate: {}", show(r)));
    assert!(
        challenge.starts_with(&format!("Basic realm=\"{realm}\"")),
        "{ctx}: WWW-Authenticate {challenge:?}, expected Basic realm=\"{realm}\""
    );
    assert_api_version(r, ctx);
    assert_code(r, method, "UNAUTHORIZED", ctx);
}

/// 403 `DENIED`.
#[track_caller]
fn assert_denied(r: &Response, method: &str, ctx: &str) {
    assert_eq!(r.status, 403, "{ctx}: expected 403: {}", show(r));
    assert_api_version(r, ctx);
    assert_code(r, method, "DENIED", ctx);
}

#[track_caller]
fn assert_status(r: &Response, status: u16, ctx: &str) {
    assert_eq!(r.status, status, "{ctx}: expected {status}: {}", show(r));
    assert_api_version(r, ctx);
}

/// A refused response reveals nothing: no content headers, and none of `secrets` (blob bytes,
/// tag and repository names, digests) in its body or headers unless the request itself named it.
#[track_caller]
fn assert_no_leak(r: &Response, path: &str, secrets: &[String], ctx: &str) {
    for h in [
        "docker-content-digest",
        "location",
        "range",
        "content-range",
        "docker-upload-uuid",
        "link",
        "oci-subject",
        "oci-filters-applied",
        "etag",
    ] {
        assert!(r.header(h).is_none(), "{ctx}: refused response carries {h}: {}", show(r));
    }
    let headers: String = r.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    let body = r.text();
    for s in secrets {
        if path.contains(s.as_str()) {
            continue;
        }
        assert!(!body.contains(s.as_str()), "{ctx}: refused response body leaks {s:?}: {}", show(r));
        assert!(!headers.contains(s.as_str()), "{ctx}: refused response headers leak {s:?}: {}", show(r));
    }
}

/// Anonymous → 401 + challenge; each of `lacking` → 403; nothing leaks in any of them.
#[track_caller]
fn refused(
    p: &Pier,
    secrets: &[String],
    lacking: &[&str],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let ctx = format!("{method} {path}");
    let r = call(p, None, method, path, headers, body);
    assert_unauthorized(&r, method, &format!("{ctx} without credentials"));
    assert_no_leak(&r, path, secrets, &format!("{ctx} without credentials"));
    for u in lacking {
        let c = format!("{ctx} as {u}");
        let r = call(p, Some(u), method, path, headers, body);
        assert_denied(&r, method, &c);
        assert_no_leak(&r, path, secrets, &c);
    }
}

/// Single-request blob push (`POST ?digest=`) as `who`; asserts 201.
#[track_caller]
fn push_blob_as(p: &Pier, who: &str, repo: &str, data: &[u8]) -> String {
    let d = sha256_digest(data);
    let r = call(p, Some(who), "POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data);
    assert_status(&r, 201, &format!("push blob to {repo} as {who}"));
    d
}

#[track_caller]
fn push_manifest_as(p: &Pier, who: &str, repo: &str, reference: &str, body: &[u8]) -> String {
    let r = call(
        p,
        Some(who),
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", OCI_MANIFEST)],
        body,
    );
    assert_status(&r, 201, &format!("push manifest {repo}:{reference} as {who}"));
    sha256_digest(body)
}

/// Config + one layer + manifest tagged `tag`, as `who`; returns the manifest digest.
#[track_caller]
fn push_image_as(p: &Pier, who: &str, repo: &str, tag: &str, layer: &[u8]) -> String {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").into_bytes();
    let cd = push_blob_as(p, who, repo, &config);
    let ld = push_blob_as(p, who, repo, layer);
    let m = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    push_manifest_as(p, who, repo, tag, &m)
}

fn catalog_as(p: &Pier, who: Option<&str>) -> BTreeSet<String> {
    let r = get_as(p, who, "/v2/_catalog");
    assert_status(&r, 200, &format!("catalog as {who:?}"));
    r.json()["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("catalog as {who:?}: no repositories array: {}", show(&r)))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One request on a fresh connection written byte for byte; tolerates the server closing early.
/// Returns the status code and the raw response text.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                if buf.is_empty() {
                    return Err(format!("read: {e}"));
                }
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {:?}", &text[..text.len().min(300)]))?;
    Ok((status, text))
}

/// A keep-alive HTTP/1.1 connection: requests are sent strictly one after another.
struct Conn {
    s: TcpStream,
    addr: SocketAddr,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn { s, addr }
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.s.write_all(head.as_bytes()).unwrap();
        read_response(&mut self.s, false)
    }
}

fn pier_cmd() -> Command {
    Command::new(PIER)
}

/// Starts pier with htpasswd auth on `htpasswd`, which must refuse to start; returns its stderr.
#[track_caller]
fn refuses_to_start(htpasswd: &Path, what: &str) -> String {
    Pier::new(Options { extra_yaml: auth_yaml(htpasswd), ..Default::default() }).expect_refusal(what)
}

/// skopeo with a private, empty credentials store, so only the flags given here count.
fn skopeo_in(home: &Path, args: &[&str]) -> Output {
    output(
        Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
            .env("DOCKER_CONFIG", home),
    )
}

#[track_caller]
fn skopeo_ok(p: &Pier, home: &Path, args: &[&str]) -> String {
    run_logged(
        p,
        Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
            .env("DOCKER_CONFIG", home),
    )
}

#[track_caller]
fn skopeo_fails(home: &Path, args: &[&str]) -> String {
    let out = skopeo_in(home, args);
    assert!(!out.status.success(), "skopeo {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Every route and method: no credentials → 401, lacking the action → 403, having it → success.

#[test]
fn every_route_requires_its_action() {
    let users = Users::new(&["admin", "reader", "writer", "deleter", "noread", "nowrite", "nodelete", "nobody"]);
    let rules: &[Rule] = &[
        ("admin", &["*"], ALL),
        ("reader", &["team/*"], &["pull"]),
        ("writer", &["team/*"], &["push"]),
        ("deleter", &["team/*"], &["delete"]),
        ("noread", &["team/*"], &["push", "delete"]),
        // Rules are additive: nowrite gets pull and delete from two rules.
        ("nowrite", &["team/*"], &["pull"]),
        ("nowrite", &["team/*"], &["delete"]),
        ("nodelete", &["team/*"], &["pull", "push"]),
        ("nobody", &["elsewhere/*"], ALL),
    ];
    let p = start(&users, Some(rules));
    let repo = "team/app";

    // Data, pushed as admin.
    let config = br#"{"architecture":"amd64","os":"linux","secret":"CONFIG-SECRET-77"}"#.to_vec();
    let layer = b"LAYER-SECRET-BYTES-4b1f: the content nobody unauthorised may see".to_vec();
    let cd = push_blob_as(&p, "admin", repo, &config);
    let ld = push_blob_as(&p, "admin", repo, &layer);
    let m1 = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let m1d = push_manifest_as(&p, "admin", repo, "rel-alpha-3x", &m1);
    push_manifest_as(&p, "admin", repo, "rel-hidden-9q", &m1);
    push_manifest_as(&p, "admin", repo, "del-tag-5k", &m1);
    let config2 = br#"{"architecture":"arm64","os":"linux","secret":"CONFIG-SECRET-78"}"#.to_vec();
    let cd2 = push_blob_as(&p, "admin", repo, &config2);
    let m_del = image_manifest((&cd2, config2.len()), &[(&ld, layer.len())]);
    let m_del_d = push_manifest_as(&p, "admin", repo, &sha256_digest(&m_del), &m_del);
    let empty = push_blob_as(&p, "admin", repo, b"{}");
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.pier.test.secret-sig",
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": OCI_EMPTY, "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": m1d, "size": m1.len()},
    }))
    .unwrap();
    let ref_d = push_manifest_as(&p, "admin", repo, &sha256_digest(&referrer), &referrer);
    let blob_del = b"DELETE-ME-BLOB-SECRET-31".to_vec();
    let blob_del_d = push_blob_as(&p, "admin", repo, &blob_del);
    push_image_as(&p, "admin", "team/zz-other", "other-tag-8w", b"OTHER-REPO-LAYER-SECRET");

    let hex = |d: &str| d.split_once(':').unwrap().1.to_string();
    let secrets: Vec<String> = [
        "LAYER-SECRET-BYTES-4b1f",
        "CONFIG-SECRET-77",
        "CONFIG-SECRET-78",
        "DELETE-ME-BLOB-SECRET",
        "OTHER-REPO-LAYER-SECRET",
        "rel-alpha-3x",
        "rel-hidden-9q",
        "del-tag-5k",
        "other-tag-8w",
        "team/zz-other",
        "team/app",
        "secret-sig",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([&m1d, &ld, &cd, &m_del_d, &ref_d, &blob_del_d].iter().map(|d| hex(d)))
    .collect();
    let s = &secrets;

    // --- /v2/: a challenge without credentials, 200 for any valid user, whatever their rights.
    for method in ["GET", "HEAD"] {
        let r = call(&p, None, method, "/v2/", &[], b"");
        assert_unauthorized(&r, method, &format!("{method} /v2/"));
        assert_no_leak(&r, "/v2/", s, "/v2/");
    }
    for u in ["admin", "reader", "writer", "deleter", "noread", "nowrite", "nodelete", "nobody"] {
        assert_status(&get_as(&p, Some(u), "/v2/"), 200, &format!("GET /v2/ as {u}"));
    }

    // --- catalog: filtered to what the caller may pull.
    let r = get_as(&p, None, "/v2/_catalog");
    assert_unauthorized(&r, "GET", "catalog without credentials");
    assert_no_leak(&r, "/v2/_catalog", s, "catalog without credentials");
    assert_eq!(catalog_as(&p, Some("nobody")), set(&[]), "nobody may pull nothing that exists");
    assert_eq!(catalog_as(&p, Some("reader")), set(&["team/app", "team/zz-other"]));
    // writer may pull nowhere: an empty list or a refusal, never a name.
    let r = get_as(&p, Some("writer"), "/v2/_catalog");
    if r.status == 403 {
        assert_denied(&r, "GET", "catalog as writer");
        assert_no_leak(&r, "/v2/_catalog", s, "catalog as writer");
    } else {
        assert_status(&r, 200, "catalog as writer");
        assert_eq!(r.json()["repositories"], json!([]), "push alone does not list: {}", show(&r));
    }
    assert_eq!(catalog_as(&p, Some("admin")), set(&["team/app", "team/zz-other"]));

    // --- pull: GET/HEAD blobs and manifests, tags/list, referrers. Lacking: noread (push+delete).
    let pull_lacking = ["noread", "nobody"];
    let blob_path = format!("/v2/{repo}/blobs/{ld}");
    for method in ["GET", "HEAD"] {
        refused(&p, s, &pull_lacking, method, &blob_path, &[], b"");
        let r = call(&p, Some("reader"), method, &blob_path, &[], b"");
        assert_status(&r, 200, &format!("{method} blob as reader"));
        assert_eq!(r.header("docker-content-digest"), Some(ld.as_str()));
        if method == "GET" {
            assert!(r.body == layer, "GET blob as reader: wrong bytes");
        }
    }
    let accept = [("Accept", OCI_MANIFEST)];
    for reference in ["rel-alpha-3x", m1d.as_str()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        for method in ["GET", "HEAD"] {
            refused(&p, s, &pull_lacking, method, &path, &accept, b"");
            let r = call(&p, Some("reader"), method, &path, &accept, b"");
            assert_status(&r, 200, &format!("{method} {path} as reader"));
            assert_eq!(r.header("docker-content-digest"), Some(m1d.as_str()));
            if method == "GET" {
                assert_eq!(r.body, m1, "{path}");
            }
        }
    }
    let tags_path = format!("/v2/{repo}/tags/list");
    refused(&p, s, &pull_lacking, "GET", &tags_path, &[], b"");
    let r = get_as(&p, Some("reader"), &tags_path);
    assert_status(&r, 200, "tags/list as reader");
    assert_eq!(r.json()["tags"], json!(["del-tag-5k", "rel-alpha-3x", "rel-hidden-9q"]), "{}", show(&r));
    let referrers_path = format!("/v2/{repo}/referrers/{m1d}");
    refused(&p, s, &pull_lacking, "GET", &referrers_path, &[], b"");
    let r = get_as(&p, Some("reader"), &referrers_path);
    assert_status(&r, 200, "referrers as reader");
    assert!(r.text().contains(&ref_d), "referrers as reader: {}", show(&r));
    // What does not exist is refused the same way (no existence oracle), and is a 404 only for
    // someone allowed to look.
    for path in [
        format!("/v2/{repo}/manifests/no-such-tag"),
        format!("/v2/{repo}/blobs/{}", sha256_digest(b"never pushed")),
        "/v2/team/nope/tags/list".to_string(),
        "/v2/team/nope/manifests/latest".to_string(),
    ] {
        refused(&p, s, &pull_lacking, "GET", &path, &[], b"");
        assert_status(&get_as(&p, Some("reader"), &path), 404, &format!("GET {path} as reader"));
    }

    // --- push: uploads and manifest PUTs. Lacking: nowrite (pull+delete).
    let push_lacking = ["nowrite", "nobody"];
    let start_path = format!("/v2/{repo}/blobs/uploads/");
    refused(&p, s, &push_lacking, "POST", &start_path, &[], b"");
    let r = call(&p, Some("writer"), "POST", &start_path, &[], b"");
    assert_status(&r, 202, "POST upload as writer");
    assert!(location(&r).starts_with("/v2/team/app/blobs/uploads/"), "{}", show(&r));

    let mono = b"MONOLITHIC-BY-WRITER-555".to_vec();
    let mono_d = sha256_digest(&mono);
    let mono_path = format!("/v2/{repo}/blobs/uploads/?digest={mono_d}");
    refused(&p, s, &push_lacking, "POST", &mono_path, &[], &mono);
    let mono_blob = format!("/v2/{repo}/blobs/{mono_d}");
    assert_status(&call(&p, Some("admin"), "HEAD", &mono_blob, &[], b""), 404, "refused POST ?digest= stored nothing");
    let r = call(&p, Some("writer"), "POST", &mono_path, &[], &mono);
    assert_status(&r, 201, "POST ?digest= as writer");
    assert_eq!(get_as(&p, Some("admin"), &mono_blob).body, mono);

    // Mount: push on the target, and pull on the source or no mount (a plain 202 session).
    let mount_path = format!("/v2/team/mnt/blobs/uploads/?mount={ld}&from={repo}");
    let mounted = format!("/v2/team/mnt/blobs/{ld}");
    refused(&p, s, &push_lacking, "POST", &mount_path, &[], b"");
    let r = call(&p, Some("writer"), "POST", &mount_path, &[], b"");
    assert_status(&r, 202, "mount as writer (push, no pull on the source)");
    assert!(location(&r).starts_with("/v2/team/mnt/blobs/uploads/"), "{}", show(&r));
    assert_status(&call(&p, Some("admin"), "HEAD", &mounted, &[], b""), 404, "no mount without pull on the source");
    let r = call(&p, Some("nodelete"), "POST", &mount_path, &[], b"");
    assert_status(&r, 201, "mount as nodelete (pull+push)");
    assert_eq!(r.header("docker-content-digest"), Some(ld.as_str()));
    assert_eq!(get_as(&p, Some("admin"), &mounted).body, layer, "mounted blob");

    // An upload session: PATCH, GET, PUT.
    let r = call(&p, Some("writer"), "POST", &start_path, &[], b"");
    assert_status(&r, 202, "POST upload as writer");
    let session = location(&r);
    let chunk = b"CHUNKED-BY-WRITER-0123456789".to_vec();
    let cr = format!("0-{}", chunk.len() - 1);
    let patch_headers = [("Content-Type", "application/octet-stream"), ("Content-Range", cr.as_str())];
    refused(&p, s, &push_lacking, "PATCH", &session, &patch_headers, &chunk);
    // The refused PATCHes appended nothing: the writer's chunk still starts at 0.
    let r = call(&p, Some("writer"), "PATCH", &session, &patch_headers, &chunk);
    assert_status(&r, 202, "PATCH as writer");
    assert_eq!(r.header("range"), Some(cr.as_str()), "{}", show(&r));
    refused(&p, s, &push_lacking, "GET", &session, &[], b"");
    let r = call(&p, Some("writer"), "GET", &session, &[], b"");
    assert_status(&r, 204, "GET upload as writer");
    assert_eq!(r.header("range"), Some(cr.as_str()), "{}", show(&r));
    let chunk_d = sha256_digest(&chunk);
    let commit = with_query(&session, &format!("digest={chunk_d}"));
    refused(&p, s, &push_lacking, "PUT", &commit, &[("Content-Type", "application/octet-stream")], b"");
    let r = call(&p, Some("writer"), "PUT", &commit, &[("Content-Type", "application/octet-stream")], b"");
    assert_status(&r, 201, "PUT upload as writer");
    assert_eq!(get_as(&p, Some("admin"), &format!("/v2/{repo}/blobs/{chunk_d}")).body, chunk);

    // Cancelling a session.
    let r = call(&p, Some("writer"), "POST", &start_path, &[], b"");
    assert_status(&r, 202, "POST upload as writer");
    let session2 = location(&r);
    refused(&p, s, &push_lacking, "DELETE", &session2, &[], b"");
    assert_status(&call(&p, Some("writer"), "GET", &session2, &[], b""), 204, "session survives refused DELETEs");
    assert_status(&call(&p, Some("writer"), "DELETE", &session2, &[], b""), 204, "DELETE upload as writer");
    assert_status(&call(&p, Some("writer"), "GET", &session2, &[], b""), 404, "cancelled session");

    // Manifest PUT by tag and by digest.
    let mt = [("Content-Type", OCI_MANIFEST)];
    let by_tag = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
        "annotations": {"pushed": "by tag"},
    }))
    .unwrap();
    let tag_path = format!("/v2/{repo}/manifests/pushed-tag");
    refused(&p, s, &push_lacking, "PUT", &tag_path, &mt, &by_tag);
    assert_status(&get_as(&p, Some("admin"), &tag_path), 404, "refused manifest PUTs stored nothing");
    assert_status(&call(&p, Some("writer"), "PUT", &tag_path, &mt, &by_tag), 201, "PUT manifest by tag as writer");
    assert_eq!(get_as(&p, Some("admin"), &tag_path).body, by_tag);
    let by_digest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
        "annotations": {"pushed": "by digest"},
    }))
    .unwrap();
    let digest_path = format!("/v2/{repo}/manifests/{}", sha256_digest(&by_digest));
    refused(&p, s, &push_lacking, "PUT", &digest_path, &mt, &by_digest);
    assert_status(&get_as(&p, Some("admin"), &digest_path), 404, "refused manifest PUTs stored nothing");
    assert_status(&call(&p, Some("writer"), "PUT", &digest_path, &mt, &by_digest), 201, "PUT manifest by digest");

    // --- delete: blobs and manifests (by tag and by digest). Lacking: nodelete (pull+push).
    let delete_lacking = ["nodelete", "nobody"];
    let del_blob = format!("/v2/{repo}/blobs/{blob_del_d}");
    refused(&p, s, &delete_lacking, "DELETE", &del_blob, &[], b"");
    assert_eq!(get_as(&p, Some("admin"), &del_blob).body, blob_del, "blob survives refused DELETEs");
    assert_status(&call(&p, Some("deleter"), "DELETE", &del_blob, &[], b""), 202, "DELETE blob as deleter");
    assert_status(&get_as(&p, Some("admin"), &del_blob), 404, "deleted blob");

    let del_tag = format!("/v2/{repo}/manifests/del-tag-5k");
    refused(&p, s, &delete_lacking, "DELETE", &del_tag, &[], b"");
    assert_status(&get_as(&p, Some("admin"), &del_tag), 200, "tag survives refused DELETEs");
    assert_status(&call(&p, Some("deleter"), "DELETE", &del_tag, &[], b""), 202, "DELETE tag as deleter");
    assert_status(&get_as(&p, Some("admin"), &del_tag), 404, "deleted tag");
    assert_status(&get_as(&p, Some("admin"), &format!("/v2/{repo}/manifests/rel-alpha-3x")), 200, "other tag");

    let del_manifest = format!("/v2/{repo}/manifests/{m_del_d}");
    refused(&p, s, &delete_lacking, "DELETE", &del_manifest, &[], b"");
    assert_eq!(get_as(&p, Some("admin"), &del_manifest).body, m_del, "manifest survives refused DELETEs");
    assert_status(&call(&p, Some("deleter"), "DELETE", &del_manifest, &[], b""), 202, "DELETE manifest as deleter");
    assert_status(&get_as(&p, Some("admin"), &del_manifest), 404, "deleted manifest");

    // No password reached the log.
    let log = p.log();
    for u in ["admin", "reader", "writer", "nowrite"] {
        assert!(!log.contains(&pw(u)), "password of {u} in the log");
        assert!(!log.contains(&base64(format!("{u}:{}", pw(u)).as_bytes())), "Authorization of {u} in the log");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Anonymous pulls of public/*, authenticated pushes, with skopeo; the docker-style handshake.

#[test]
fn skopeo_anonymous_pull_and_authenticated_push() {
    let users = Users::new(&["admin", "ci"]);
    let rules: &[Rule] = &[
        ("anonymous", &["public/*"], &["pull"]),
        ("*", &["public/*"], &["pull"]),
        ("ci", &["apps/*"], &["pull", "push"]),
        ("admin", &["*"], ALL),
    ];
    let p = start(&users, Some(rules));
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let host = p.host();
    let admin = format!("admin:{}", pw("admin"));
    let ci = format!("ci:{}", pw("ci"));
    let ci_wrong = "ci:not-the-password".to_string();

    // The docker-style handshake: /v2/ challenges, then the same request with credentials.
    let r = p.get("/v2/");
    assert_unauthorized(&r, "GET", "/v2/ without credentials");
    assert_status(&get_as(&p, Some("ci"), "/v2/"), 200, "/v2/ as ci");
    assert_unauthorized(&with_auth(&p, &basic("ci", "not-the-password"), "GET", "/v2/"), "GET", "/v2/ wrong password");

    let img = Image::new("auth-public", "amd64", &[20_000, 3_000], 11);
    let src = tempfile::tempdir().unwrap();
    write_image_layout(src.path(), "v1", &img);
    let oci_src = format!("oci:{}:v1", src.path().display());

    // admin publishes public/base.
    let public = format!("docker://{host}/public/base:v1");
    skopeo_ok(
        &p,
        home,
        &["copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &admin, &oci_src, &public],
    );

    // Anonymous inspect and pull of public/*.
    let out = skopeo_ok(&p, home, &["inspect", "--tls-verify=false", "--no-creds", &public]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], img.digest(), "{v}");
    let dst = tempfile::tempdir().unwrap();
    let oci_dst = format!("oci:{}:v1", dst.path().display());
    skopeo_ok(&p, home, &["copy", "--preserve-digests", "--src-tls-verify=false", "--src-no-creds", &public, &oci_dst]);
    read_layout(dst.path()).assert_has_image("v1", &img);
    let tags = skopeo_ok(
        &p,
        home,
        &["list-tags", "--tls-verify=false", "--no-creds", &format!("docker://{host}/public/base")],
    );
    assert!(tags.contains("\"v1\""), "{tags}");
    // The same reads over plain HTTP, without any Authorization header.
    assert_status(&p.req("GET", "/v2/public/base/manifests/v1", &[("Accept", OCI_MANIFEST)], b""), 200, "anon GET");
    assert_status(&p.get(&format!("/v2/public/base/blobs/{}", img.config_digest())), 200, "anon GET blob");

    // Anonymous may not push, even to public/*.
    let anon_push = format!("docker://{host}/public/anon:v1");
    skopeo_fails(home, &["copy", "--dest-tls-verify=false", "--dest-no-creds", &oci_src, &anon_push]);
    assert_status(&get_as(&p, Some("admin"), "/v2/public/anon/tags/list"), 404, "anonymous push stored nothing");

    // ci pushes to apps/* and reads it back with --creds / --src-creds.
    let img2 = Image::new("auth-apps", "amd64", &[30_000], 12);
    let src2 = tempfile::tempdir().unwrap();
    write_image_layout(src2.path(), "v1", &img2);
    let oci_src2 = format!("oci:{}:v1", src2.path().display());
    let apps = format!("docker://{host}/apps/web:v1");
    skopeo_ok(
        &p,
        home,
        &["copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &ci, &oci_src2, &apps],
    );
    let out = skopeo_ok(&p, home, &["inspect", "--tls-verify=false", "--creds", &ci, &apps]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], img2.digest(), "{v}");
    let dst2 = tempfile::tempdir().unwrap();
    let oci_dst2 = format!("oci:{}:v1", dst2.path().display());
    skopeo_ok(
        &p,
        home,
        &["copy", "--preserve-digests", "--src-tls-verify=false", "--src-creds", &ci, &apps, &oci_dst2],
    );
    read_layout(dst2.path()).assert_has_image("v1", &img2);

    // apps/* is not anonymous, and a wrong password is refused even where anonymous may pull.
    skopeo_fails(home, &["inspect", "--tls-verify=false", "--no-creds", &apps]);
    skopeo_fails(home, &["inspect", "--tls-verify=false", "--creds", &ci_wrong, &apps]);
    skopeo_fails(home, &["inspect", "--tls-verify=false", "--creds", &ci_wrong, &public]);

    // ci may not push anywhere else.
    let other = format!("docker://{host}/other/x:v1");
    skopeo_fails(home, &["copy", "--dest-tls-verify=false", "--dest-creds", &ci, &oci_src2, &other]);
    skopeo_fails(
        home,
        &["copy", "--dest-tls-verify=false", "--dest-creds", &ci, &oci_src2, &format!("docker://{host}/public/ci:v1")],
    );
    assert_status(&get_as(&p, Some("admin"), "/v2/other/x/tags/list"), 404, "refused push stored nothing");
    assert_status(&get_as(&p, Some("admin"), "/v2/public/ci/tags/list"), 404, "refused push stored nothing");
    let all = catalog_as(&p, Some("admin"));
    assert_eq!(all, set(&["apps/web", "public/base"]), "catalog after refused pushes");

    // Registry to registry as ci: public/base → apps/base (blob mounts from public/* are fine).
    let apps_base = format!("docker://{host}/apps/base:v1");
    skopeo_ok(
        &p,
        home,
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-creds",
            &ci,
            "--dest-creds",
            &ci,
            &public,
            &apps_base,
        ],
    );
    let out = skopeo_ok(&p, home, &["inspect", "--tls-verify=false", "--creds", &admin, &apps_base]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], img.digest(), "{v}");
}

/// skopeo with `--no-creds` answers a Basic challenge with `Authorization: Basic Og==` (an empty
/// user and password: measured with skopeo 1.9). For anonymous pulls to work with it, that header
/// must count as "no credentials": allowed where anonymous may pull, a 401 challenge elsewhere.
#[test]
fn empty_basic_credentials_are_anonymous() {
    let users = Users::new(&["admin"]);
    let rules: &[Rule] = &[("anonymous", &["public/*"], &["pull"]), ("admin", &["*"], ALL)];
    let p = start(&users, Some(rules));
    push_image_as(&p, "admin", "public/x", "v1", b"public layer");
    push_image_as(&p, "admin", "private/x", "v1", b"private layer");
    let empty = format!("Basic {}", base64(b":"));
    assert_eq!(empty, "Basic Og==");
    let r = p.req("GET", "/v2/public/x/manifests/v1", &[("Authorization", &empty), ("Accept", OCI_MANIFEST)], b"");
    assert_status(&r, 200, "public manifest with Basic Og==");
    let r = with_auth(&p, &empty, "GET", "/v2/private/x/manifests/v1");
    assert_unauthorized(&r, "GET", "private manifest with Basic Og==");
    let r = with_auth(&p, &empty, "GET", "/v2/");
    assert_unauthorized(&r, "GET", "/v2/ with Basic Og==");
}

/// `REGISTRY_AUTH*` variables alone configure htpasswd; without an `access` section every
/// authenticated user may pull, push and delete everything, anonymous nothing.
#[test]
fn env_variables_configure_htpasswd_without_access_rules() {
    let users = Users::new(&["alice", "bob"]);
    let p = Pier::start_with(Options {
        delete_enabled: true,
        env: vec![
            ("REGISTRY_AUTH".into(), "htpasswd".into()),
            ("REGISTRY_AUTH_HTPASSWD_REALM".into(), "env-realm".into()),
            ("REGISTRY_AUTH_HTPASSWD_PATH".into(), users.path.display().to_string()),
        ],
        ..Default::default()
    });
    let r = p.get("/v2/");
    assert_unauthorized_realm(&r, "GET", "env-realm", "/v2/ without credentials");
    assert_status(&get_as(&p, Some("alice"), "/v2/"), 200, "/v2/ as alice");

    let d = push_image_as(&p, "alice", "any/where/deep", "t1", b"alice's layer");
    push_image_as(&p, "bob", "bobs", "t1", b"bob's layer");
    let path = format!("/v2/any/where/deep/manifests/{d}");
    assert_status(&get_as(&p, Some("bob"), &path), 200, "bob pulls alice's image");
    assert_unauthorized_realm(&get_as(&p, None, &path), "GET", "env-realm", "anonymous pull");
    assert_unauthorized_realm(
        &call(&p, None, "POST", "/v2/anon/blobs/uploads/", &[], b""),
        "POST",
        "env-realm",
        "anonymous push",
    );
    assert_eq!(catalog_as(&p, Some("bob")), set(&["any/where/deep", "bobs"]));
    assert_status(&call(&p, Some("bob"), "DELETE", &path, &[], b""), 202, "bob deletes alice's manifest");
    assert_status(&get_as(&p, Some("alice"), &path), 404, "deleted");
}

// ---------------------------------------------------------------------------------------------
// 3. The catalog lists only what the caller may pull.

#[test]
fn catalog_is_filtered_per_user() {
    let users = Users::new(&["admin", "ci", "dev", "pusher", "plain"]);
    let rules: &[Rule] = &[
        ("anonymous", &["public/*"], &["pull"]),
        ("*", &["public/*", "shared/*"], &["pull"]),
        ("ci", &["apps/*"], &["pull", "push"]),
        ("dev", &["apps/web", "tools/*"], &["pull"]),
        ("pusher", &["apps/*"], &["push"]),
        ("admin", &["*"], ALL),
    ];
    let p = start(&users, Some(rules));
    let repos = [
        "apps",
        "apps/api",
        "apps/web",
        "apps/web/sub",
        "private/y",
        "public/a",
        "public/b/deep",
        "publicity/z",
        "shared/s",
        "tools/x",
    ];
    for (i, r) in repos.iter().enumerate() {
        push_image_as(&p, "admin", r, "t", format!("layer {i}").as_bytes());
    }
    let public = ["public/a", "public/b/deep"];
    let everyone: Vec<&str> = public.iter().copied().chain(["shared/s"]).collect();
    let with = |extra: &[&str]| -> BTreeSet<String> { everyone.iter().chain(extra).map(|s| s.to_string()).collect() };

    assert_eq!(catalog_as(&p, None), set(&public), "anonymous");
    assert_eq!(catalog_as(&p, Some("plain")), with(&[]), "plain (only the * rule)");
    assert_eq!(catalog_as(&p, Some("pusher")), with(&[]), "push does not list");
    assert_eq!(catalog_as(&p, Some("ci")), with(&["apps/api", "apps/web", "apps/web/sub"]), "ci");
    assert_eq!(catalog_as(&p, Some("dev")), with(&["apps/web", "tools/x"]), "dev (exact name, no glob)");
    assert_eq!(catalog_as(&p, Some("admin")), set(&repos), "admin");

    // Paginated: the pages add up to the same filtered list, and no Link names a hidden repo.
    for who in [None, Some("ci"), Some("dev")] {
        let expected = if who.is_none() { set(&public) } else { catalog_as(&p, who) };
        let mut seen = Vec::new();
        let mut path = "/v2/_catalog?n=1".to_string();
        for _ in 0..50 {
            let r = get_as(&p, who, &path);
            assert_status(&r, 200, &format!("catalog page {path} as {who:?}"));
            let page: Vec<String> =
                r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
            assert!(page.len() <= 1, "n=1 page has {page:?}");
            seen.extend(page);
            let Some(link) = r.header("link") else { break };
            let start = link.find('<').unwrap() + 1;
            let end = link.find('>').unwrap();
            path = strip_origin(&link[start..end]);
            if let Some(last) = path.split(['?', '&']).find_map(|kv| kv.strip_prefix("last=")) {
                let last = percent_decode(last);
                assert!(expected.contains(&last), "catalog Link as {who:?} names {last:?}, not visible to it");
            }
        }
        let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), seen_set.len(), "duplicates across pages as {who:?}: {seen:?}");
        assert_eq!(seen_set, expected, "paginated catalog as {who:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Wrong, unknown and malformed credentials; oversized headers.

#[test]
fn bad_credentials_are_401_and_the_server_stays_healthy() {
    let users = Users::new(&["alice"]);
    // A password with colons: only the first colon of the Basic credentials separates.
    let colon_user = htpasswd_line("colon", "a:b:c", 4);
    std::fs::write(&users.path, format!("{}\n{colon_user}\n", std::fs::read_to_string(&users.path).unwrap())).unwrap();
    let rules: &[Rule] = &[("anonymous", &["public/*"], &["pull"]), ("*", &["*"], ALL)];
    let p = start(&users, Some(rules));
    push_image_as(&p, "alice", "public/img", "v1", b"public bytes");
    let public = "/v2/public/img/manifests/v1";
    assert_status(&p.req("GET", public, &[("Accept", OCI_MANIFEST)], b""), 200, "anonymous pull of public/*");
    assert_status(&with_auth(&p, &basic("colon", "a:b:c"), "GET", public), 200, "password with colons");

    let cases: Vec<(&str, String)> = vec![
        ("wrong password", basic("alice", "wrong")),
        ("unknown user", basic("mallory", "whatever")),
        ("empty password", basic("alice", "")),
        ("not Basic", "Bearer abc.def.ghi".into()),
        ("bad base64", "Basic !!!not*base64!!!".into()),
        ("no colon", format!("Basic {}", base64(b"alicewithoutcolon"))),
        ("empty value", "".into()),
        ("scheme only", "Basic".into()),
        ("scheme and space", "Basic ".into()),
        ("not UTF-8", format!("Basic {}", base64(&[0xff, 0xfe, b':', 0xfd]))),
        ("password prefix", basic("alice", &pw("alice")[..5])),
        ("password plus suffix", basic("alice", &format!("{}x", pw("alice")))),
    ];
    // Each case from its own client address (127.0.0.N): one address gets only
    // `ATTEMPTS_ALLOWED` failed attempts a minute (see `repeated_failures_...`).
    let addr = p.addr;
    let mut jobs: Vec<(String, String, std::thread::JoinHandle<Response>)> = Vec::new();
    for (i, (what, auth)) in cases.iter().enumerate() {
        // Refused even where anonymous could pull, and (for a few) on /v2/.
        let paths: &[&str] = if i < 3 { &[public, "/v2/"] } else { &[public] };
        for path in paths {
            let (auth, path_owned) = (auth.clone(), path.to_string());
            let source: std::net::IpAddr = [127, 0, 0, 10 + jobs.len() as u8].into();
            let h = std::thread::spawn(move || {
                request_from(source, addr, "GET", &path_owned, &[("Authorization", &auth)], b"")
            });
            jobs.push((what.to_string(), path.to_string(), h));
        }
    }
    // Oversized: a 64 KiB Authorization header, a 48 KiB password, and 200 headers.
    let huge = format!("Basic {}", "A".repeat(64 * 1024));
    let long_creds = format!("Basic {}", base64(format!("alice:{}", "p".repeat(48 * 1024)).as_bytes()));
    let mut padded = format!("GET {public} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n", basic("alice", "wrong"));
    for i in 0..200 {
        padded.push_str(&format!("X-Pad-{i}: {i}\r\n"));
    }
    padded.push_str("Connection: close\r\n\r\n");
    let raw_requests = [
        (
            "64 KiB Authorization",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: {huge}\r\nConnection: close\r\n\r\n"),
        ),
        (
            "48 KiB password",
            format!("GET {public} HTTP/1.1\r\nHost: x\r\nAuthorization: {long_creds}\r\nConnection: close\r\n\r\n"),
        ),
        ("200 headers", padded),
    ];
    // The long credentials are parsed and refused (401); 200 headers exceed the server's header
    // count limit before any authentication (431).
    let expected = [("64 KiB Authorization", 401), ("48 KiB password", 401), ("200 headers", 431)];
    let raw_jobs: Vec<_> = raw_requests
        .into_iter()
        .map(|(what, req)| (what, std::thread::spawn(move || raw_exchange(addr, req.as_bytes()))))
        .collect();

    for (what, path, h) in jobs {
        let r = h.join().unwrap();
        let ctx = format!("{what} on {path}");
        assert_unauthorized(&r, "GET", &ctx);
        assert_no_leak(&r, &path, &["public bytes".to_string()], &ctx);
    }
    for (what, h) in raw_jobs {
        let (status, text) = h.join().unwrap().unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        let want = expected.iter().find(|e| e.0 == what).map(|e| e.1);
        assert_eq!(Some(status), want, "{what}: {}", &text[..text.len().min(500)]);
    }

    // Still healthy.
    assert_status(&get_as(&p, Some("alice"), "/v2/"), 200, "after bad credentials");
    assert_status(&get_as(&p, Some("alice"), public), 200, "after bad credentials");
    let log = p.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(&pw("alice")), "a password is in the log");
}

// ---------------------------------------------------------------------------------------------
// 5. The password file is reloaded when it changes, and on SIGHUP.

#[test]
fn htpasswd_changes_apply_without_restart() {
    let users = Users::new(&["alice", "admin"]);
    let p = start(&users, None);
    let f = users.path.to_str().unwrap();
    // Polling with failing credentials: each poll from the next client address (127.0.1.N), as
    // one address gets only `ATTEMPTS_ALLOWED` failed attempts a minute.
    let polls = std::cell::Cell::new(0u8);
    let ok = |u: &str, pass: &str| {
        polls.set(polls.get().wrapping_add(1));
        let source: std::net::IpAddr = [127, 0, 1, polls.get()].into();
        request_from(source, p.addr, "GET", "/v2/", &[("Authorization", &basic(u, pass))], b"").status == 200
    };
    assert!(ok("alice", &pw("alice")));
    assert!(ok("admin", &pw("admin")));
    assert!(!ok("bob", &pw("bob")), "bob does not exist yet");

    // Adding a user (apache2-utils rewrites the file in place).
    run(Command::new("htpasswd").args(["-bB", "-C", "4", f, "bob", &pw("bob")]));
    assert!(wait_until(Duration::from_secs(10), || ok("bob", &pw("bob"))), "bob not accepted within 10 s");
    assert!(ok("alice", &pw("alice")), "alice still accepted");

    // Changing a password: the old one stops working (no stale cache), the new one works.
    assert!(ok("admin", &pw("admin")), "admin's credentials are now cached");
    run(Command::new("htpasswd").args(["-bB", "-C", "4", f, "admin", "second-password"]));
    assert!(
        wait_until(Duration::from_secs(10), || ok("admin", "second-password") && !ok("admin", &pw("admin"))),
        "password change not applied within 10 s"
    );

    // Removing a user revokes access, although alice's credentials were cached.
    run(Command::new("htpasswd").args(["-D", f, "alice"]));
    assert!(wait_until(Duration::from_secs(10), || !ok("alice", &pw("alice"))), "alice still accepted after 10 s");
    let r = get_as(&p, Some("alice"), "/v2/");
    assert_unauthorized(&r, "GET", "removed user");
    assert!(ok("bob", &pw("bob")), "bob still accepted");
}

#[test]
fn sighup_reloads_the_password_file() {
    let users = Users::new(&["alice", "carol"]);
    let mut p = start(&users, None);
    let ok = |p: &Pier, u: &str, pass: &str| with_auth(p, &basic(u, pass), "GET", "/v2/").status == 200;
    assert!(ok(&p, "carol", &pw("carol")));

    // Give carol a new password with a same-length entry, written in place, and put the old
    // modification time back: only the signal tells pier (unless it also compares contents).
    let before = std::fs::metadata(&users.path).unwrap();
    let text = std::fs::read_to_string(&users.path).unwrap();
    let old_line = text.lines().find(|l| l.starts_with("carol:")).unwrap().to_string();
    let new_line = htpasswd_line("carol", "new-carol-password", 4);
    assert_eq!(old_line.len(), new_line.len());
    std::fs::write(&users.path, text.replace(&old_line, &new_line)).unwrap();
    let f = std::fs::File::options().write(true).open(&users.path).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);

    p.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || ok(&p, "carol", "new-carol-password")),
        "new password not accepted within 5 s of SIGHUP; log:\n{}",
        p.log()
    );
    assert!(!ok(&p, "carol", &pw("carol")), "old password still accepted after SIGHUP");
    assert!(ok(&p, "alice", &pw("alice")));
    // SIGHUP did not stop the daemon (it served the reloaded file above, and runs on).
    assert!(p.is_running(), "pier exited on SIGHUP:\n{}", p.log());

    // Removing carol and signalling again.
    std::fs::write(&users.path, text.lines().filter(|l| !l.starts_with("carol:")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    p.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || !ok(&p, "carol", "new-carol-password")),
        "carol still accepted 5 s after SIGHUP"
    );
    assert!(ok(&p, "alice", &pw("alice")));
}

/// A reload never opens the registry: a file that is no configuration is not reloaded at all;
/// the `access` rules are never removed while authentication stays; and authentication and
/// authorization change together or not at all (a new users file waits for a restart, so do the
/// rules that come with it). A deliberate change of the rules alone applies at once.
#[test]
fn reloads_never_open_the_registry() {
    let users = Users::new(&["alice", "admin"]);
    let rules: &[Rule] = &[("alice", &["*"], &["pull"]), ("admin", &["*"], ALL)];
    let p = start(&users, Some(rules));
    push_image_as(&p, "admin", "app", "v1", b"layer");
    let alice_may_push = || call(&p, Some("alice"), "POST", "/v2/app/blobs/uploads/", &[], b"");
    assert_denied(&alice_may_push(), "POST", "at start");
    let original = std::fs::read_to_string(&p.config).unwrap();
    let rules_yaml = access_yaml(rules);
    assert!(original.contains(&rules_yaml), "{original}");
    let reload = |text: &[u8], logged: &str, n: usize| {
        std::fs::write(&p.config, text).unwrap();
        p.signal("HUP");
        p.wait_log_count(logged, n, Duration::from_secs(10));
    };

    // An emptied file, a file of NUL bytes: nothing is reloaded.
    for (i, text) in [Vec::new(), vec![0u8; 4096]].iter().enumerate() {
        reload(text, "configuration not reloaded, keeping the running one", i + 1);
        assert_unauthorized(&get_as(&p, None, "/v2/"), "GET", "after reloading a broken file");
        assert_denied(&alice_may_push(), "POST", "after reloading a broken file");
    }
    // The access section removed, authentication kept: refused, the running rules stay.
    reload(original.replace(&rules_yaml, "").as_bytes(), "configuration reloaded", 1);
    assert!(p.log().contains("removing the access rules"), "{}", p.log_tail());
    assert_denied(&alice_may_push(), "POST", "after removing the access rules");
    assert_status(&call(&p, Some("admin"), "POST", "/v2/app/blobs/uploads/", &[], b""), 202, "admin");
    // Looser rules together with another users file: both wait for a restart.
    let others = Users::new(&["alice"]);
    let loose: &[Rule] = &[("alice", &["*"], ALL), ("admin", &["*"], ALL)];
    let text = original
        .replace(&users.path.display().to_string(), &others.path.display().to_string())
        .replace(&rules_yaml, &access_yaml(loose));
    reload(text.as_bytes(), "access (changes together with auth.htpasswd)", 1);
    assert_denied(&alice_may_push(), "POST", "after a reload with another users file");
    // The same looser rules with the running users file: a deliberate change, applied.
    reload(original.replace(&rules_yaml, &access_yaml(loose)).as_bytes(), "configuration reloaded", 3);
    assert_status(&alice_may_push(), 202, "after loosening the rules alone");
}

// ---------------------------------------------------------------------------------------------
// 6. Start-up refusals.

#[test]
fn non_bcrypt_entries_and_missing_files_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = htpasswd_line("alice", "pw-a", 4);
    let good2 = htpasswd_line("carol", "pw-c", 4);
    // The valid file works (so the refusals below are about the entries, not the config).
    let ok_file = dir.path().join("ok.htpasswd");
    std::fs::write(&ok_file, format!("# comment\n\n{good}\n   \n# another\n{good2}\n")).unwrap();
    let p = Pier::start_with(Options { extra_yaml: auth_yaml(&ok_file), ..Default::default() });
    assert_status(&with_auth(&p, &basic("carol", "pw-c"), "GET", "/v2/"), 200, "valid file");
    drop(p);

    for (kind, flags) in [("MD5", "-nb"), ("SHA-1", "-nbs"), ("plain", "-nbp"), ("crypt", "-nbd"), ("SHA-256", "-nb2")]
    {
        let bad = run(Command::new("htpasswd").args([flags, "bob", "pw-b"])).trim().to_string();
        assert!(bad.starts_with("bob:") && !bad["bob:".len()..].starts_with("$2"), "{kind}: {bad:?}");
        // The bad entry is on line 7.
        let file = dir.path().join(format!("{kind}.htpasswd"));
        std::fs::write(&file, format!("# users\n{good}\n\n# more users\n\n{good2}\n{bad}\n")).unwrap();
        let stderr = refuses_to_start(&file, kind);
        assert!(
            stderr.contains("line 7") || stderr.contains(":7:") || stderr.contains(":7 "),
            "{kind}: stderr does not name line 7:\n{stderr}"
        );
        assert!(!stderr.contains("pw-b"), "{kind}: stderr shows a password:\n{stderr}");
    }

    // Garbage that is not user:hash at all.
    let file = dir.path().join("garbage.htpasswd");
    std::fs::write(&file, format!("{good}\nthis is not an entry\n")).unwrap();
    let stderr = refuses_to_start(&file, "garbage");
    assert!(stderr.contains("line 2") || stderr.contains(":2:"), "garbage: no line 2 in:\n{stderr}");

    // A missing file.
    let missing = dir.path().join("does-not-exist.htpasswd");
    let stderr = refuses_to_start(&missing, "missing file");
    assert!(stderr.contains("does-not-exist.htpasswd"), "missing file not named:\n{stderr}");
}

/// `$2y$`, `$2a$` and `$2b$` entries all work; comments and blank lines are ignored.
#[test]
fn bcrypt_variants_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let y = htpasswd_line("yuser", "pw-y", 4);
    let a = htpasswd_line("auser", "pw-a", 4).replacen("$2y$", "$2a$", 1);
    let b = htpasswd_line("buser", "pw-b", 5).replacen("$2y$", "$2b$", 1);
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, format!("# head\n\n{y}\n# {a}\n{a}\n\n\n{b}\n#\n")).unwrap();
    let p = Pier::start_with(Options { extra_yaml: auth_yaml(&file), ..Default::default() });
    for (u, pass) in [("yuser", "pw-y"), ("auser", "pw-a"), ("buser", "pw-b")] {
        assert_status(&with_auth(&p, &basic(u, pass), "GET", "/v2/"), 200, u);
        assert_unauthorized(&with_auth(&p, &basic(u, "nope"), "GET", "/v2/"), "GET", &format!("{u} wrong password"));
    }
    // A commented-out name is not a user.
    assert_unauthorized(&with_auth(&p, &basic("# auser", "pw-a"), "GET", "/v2/"), "GET", "comment as user");
}

// ---------------------------------------------------------------------------------------------
// 7. Password guessing is bounded per address before bcrypt runs; passwords never reach the log.

/// pier's failed attempts per client address and minute (`http::auth::ATTEMPTS_ALLOWED`).
const ATTEMPTS: usize = pier::http::auth::ATTEMPTS_ALLOWED as usize;

#[test]
fn repeated_failures_are_refused_before_bcrypt_and_passwords_not_logged() {
    let users = Users::new(&["alice", "mallory-user"]);
    let rules: &[Rule] = &[("anonymous", &["public/*"], &["pull"]), ("*", &["*"], ALL)];
    let p = start(&users, Some(rules));
    push_image_as(&p, "alice", "private/img", "v1", b"x");
    // Unknown names are checked at the cost the file's entries use (4 here), not a fixed one, so
    // that the answer's time does not tell which names exist.
    assert!(p.log().contains("unknown names are checked at bcrypt cost 4"), "{}", p.log_tail());

    // Missing credentials are not failed attempts (every docker command starts with them).
    for i in 0..2 * ATTEMPTS {
        assert_unauthorized(&p.get("/v2/private/img/tags/list"), "GET", &format!("no credentials {i}"));
    }

    let wrong = "Hunter2-wrong-XYZ";
    let ghost_pw = "ghost-pw-ABC-42";
    for i in 0..ATTEMPTS {
        let auth = if i % 2 == 0 { basic("mallory-user", wrong) } else { basic("ghost-user", ghost_pw) };
        assert_unauthorized(&with_auth(&p, &auth, "GET", "/v2/"), "GET", &format!("failure {i}"));
    }
    // From now on, anything that needs bcrypt from this address is refused at once with the
    // time left in the window: wrong passwords, unknown users, and right ones not verified before.
    for (what, auth) in [
        ("wrong password", basic("mallory-user", wrong)),
        ("unknown user", basic("ghost-user", ghost_pw)),
        ("malformed", "Basic !!!".to_string()),
        ("right password, not verified before", basic("mallory-user", &pw("mallory-user"))),
    ] {
        let r = with_auth(&p, &auth, "GET", "/v2/");
        assert_status(&r, 429, what);
        assert_code(&r, "GET", "TOOMANYREQUESTS", what);
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}: {}", show(&r));
    }
    // A burst of parallel guesses: all refused, none reaches bcrypt (none is logged as a failure).
    let failed_before = p.log_count("authentication failed for user");
    let addr = p.addr;
    let burst: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                let auth = basic("mallory-user", &format!("guess-{i}"));
                request(addr, "GET", "/v2/", &[("Authorization", &auth)], b"").status
            })
        })
        .collect();
    let statuses: Vec<u16> = burst.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(p.log_count("authentication failed for user"), failed_before, "bcrypt ran for a refused guess");
    // The refusal is logged once per window, not once per guess.
    assert_eq!(p.log_count("failed authentication attempts from 127.0.0.1"), 1, "{}", p.log_tail());
    // Credentials verified before are still served from the cache, and another client address
    // is not affected.
    assert_status(&get_as(&p, Some("alice"), "/v2/private/img/tags/list"), 200, "alice, cached");
    let other = request_from(
        [127, 0, 0, 2].into(),
        addr,
        "GET",
        "/v2/",
        &[("Authorization", &basic("mallory-user", &pw("mallory-user")))],
        b"",
    );
    assert_status(&other, 200, "the right password from another address");

    // The log names the users that failed, never a password or an Authorization value.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let log = p.log();
            log.contains("mallory-user") && log.contains("ghost-user")
        }),
        "failures not logged with the user name:\n{}",
        p.log()
    );
    let log = p.log();
    for secret in [
        wrong.to_string(),
        ghost_pw.to_string(),
        pw("alice"),
        pw("mallory-user"),
        base64(format!("mallory-user:{wrong}").as_bytes()),
        base64(format!("ghost-user:{ghost_pw}").as_bytes()),
        base64(format!("alice:{}", pw("alice")).as_bytes()),
    ] {
        assert!(!log.contains(&secret), "{secret:?} in the log:\n{log}");
    }
}

/// A client that opens many connections at once with the right password (parallel pulls, wrk)
/// is not mistaken for a guesser: requests with the same credentials wait for one bcrypt and
/// are served from the cache, and none of them counts as a failed attempt.
#[test]
fn parallel_requests_with_the_right_password_all_succeed() {
    let users = Users::new(&["ci"]);
    let p = start(&users, None);
    let (addr, barrier) = (p.addr, std::sync::Arc::new(std::sync::Barrier::new(4 * ATTEMPTS)));
    let requests: Vec<_> = (0..4 * ATTEMPTS)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let auth = basic("ci", &pw("ci"));
                barrier.wait();
                request(addr, "GET", "/v2/", &[("Authorization", &auth)], b"").status
            })
        })
        .collect();
    let statuses: Vec<u16> = requests.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}\n{}", p.log_tail());
    // And the address still has all its attempts: as many failures as allowed are 401, not 429.
    for i in 0..ATTEMPTS {
        assert_unauthorized(&with_auth(&p, &basic("ci", "wrong"), "GET", "/v2/"), "GET", &format!("failure {i}"));
    }
}

/// Many parallel connections from one address guessing at once (a client that opens 100): bcrypt
/// runs for exactly `ATTEMPTS` of them, whatever their number; the rest are refused unchecked.
#[test]
fn a_burst_of_guesses_from_one_address_runs_bcrypt_a_bounded_number_of_times() {
    let users = Users::new(&["victim"]);
    let p = start(&users, None);
    let (addr, barrier) = (p.addr, std::sync::Arc::new(std::sync::Barrier::new(100)));
    let guesses: Vec<_> = (0..100)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let auth = basic("victim", &format!("guess-{i}"));
                barrier.wait();
                request(addr, "GET", "/v2/", &[("Authorization", &auth)], b"").status
            })
        })
        .collect();
    let statuses: Vec<u16> = guesses.into_iter().map(|h| h.join().unwrap()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (ATTEMPTS, 100 - ATTEMPTS), "{statuses:?}");
    p.wait_log_count("authentication failed for user \"victim\"", ATTEMPTS, Duration::from_secs(5));
    assert_eq!(p.log_count("authentication failed for user"), ATTEMPTS, "bcrypt ran more often");
}

// ---------------------------------------------------------------------------------------------
// 8. `pier htpasswd add/remove/list`, and compatibility with apache2-utils both ways.

fn pier_htpasswd(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = pier_cmd();
    cmd.arg("htpasswd").args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn pier htpasswd");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn pier_htpasswd_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = pier_htpasswd(args, stdin);
    assert!(
        out.status.success(),
        "pier htpasswd {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apache_verifies(file: &Path, user: &str, pass: &str) -> bool {
    output(Command::new("htpasswd").arg("-vb").arg(file).args([user, pass])).status.success()
}

fn listed(file: &Path) -> Vec<String> {
    let f = file.to_str().unwrap();
    let mut v: Vec<String> = pier_htpasswd_ok(&["list", "--file", f], None)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

fn entries(file: &Path, user: &str) -> Vec<String> {
    let prefix = format!("{user}:");
    std::fs::read_to_string(file).unwrap().lines().filter(|l| l.starts_with(&prefix)).map(String::from).collect()
}

#[test]
fn pier_htpasswd_command_and_apache_compatibility() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let f = file.to_str().unwrap();

    // add creates the file, mode 0600, with a bcrypt entry apache2-utils verifies.
    pier_htpasswd_ok(&["add", "alice", "--file", f, "--password-stdin", "--cost", "4"], Some("alice-pass-1"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let e = entries(&file, "alice");
    assert_eq!(e.len(), 1, "{e:?}");
    let parts: Vec<&str> = e[0].split('$').collect();
    assert!(["2y", "2a", "2b"].contains(&parts[1]) && parts[2] == "04", "not a cost-4 bcrypt entry: {}", e[0]);
    assert!(apache_verifies(&file, "alice", "alice-pass-1"), "htpasswd -v rejects pier's entry");
    assert!(!apache_verifies(&file, "alice", "wrong"));

    // Default cost.
    pier_htpasswd_ok(&["add", "bob", "--file", f, "--password-stdin"], Some("bob-pass"));
    assert!(apache_verifies(&file, "bob", "bob-pass"));
    assert!(entries(&file, "bob")[0].contains("$2"), "not bcrypt");
    assert_eq!(listed(&file), ["alice", "bob"]);

    // add replaces an existing user's entry; nothing else changes.
    let bob_before = entries(&file, "bob");
    pier_htpasswd_ok(&["add", "alice", "--file", f, "--password-stdin", "--cost", "4"], Some("alice-pass-2"));
    assert_eq!(entries(&file, "alice").len(), 1, "{}", std::fs::read_to_string(&file).unwrap());
    assert!(apache_verifies(&file, "alice", "alice-pass-2"));
    assert!(!apache_verifies(&file, "alice", "alice-pass-1"), "old password still valid");
    assert_eq!(entries(&file, "bob"), bob_before);
    assert_eq!(listed(&file), ["alice", "bob"]);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "mode after rewrite");

    // remove; removing an absent user fails.
    pier_htpasswd_ok(&["remove", "bob", "--file", f], None);
    assert_eq!(listed(&file), ["alice"]);
    assert!(!apache_verifies(&file, "bob", "bob-pass"));
    let out = pier_htpasswd(&["remove", "bob", "--file", f], None);
    assert!(!out.status.success(), "removing an absent user succeeded");
    assert_eq!(listed(&file), ["alice"]);
    // Written atomically: no temporary files left behind.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["users"], "stray files next to the password file");

    // apache2-utils edits pier's file, pier reads apache2-utils' edits.
    run(Command::new("htpasswd").args(["-bB", "-C", "4", f, "dave", "dave-pass"]));
    assert_eq!(listed(&file), ["alice", "dave"]);
    run(Command::new("htpasswd").args(["-D", f, "alice"]));
    assert_eq!(listed(&file), ["dave"]);

    // A file made entirely by apache2-utils; pier adds to it without touching other lines.
    let file2 = dir.path().join("apache");
    let f2 = file2.to_str().unwrap();
    run(Command::new("htpasswd").args(["-Bbc", f2, "carol", "carol-pass"]));
    run(Command::new("htpasswd").args(["-Bb", f2, "erin", "erin-pass"]));
    let carol = entries(&file2, "carol");
    assert_eq!(listed(&file2), ["carol", "erin"]);
    pier_htpasswd_ok(&["add", "frank", "--file", f2, "--password-stdin", "--cost", "4"], Some("frank-pass"));
    assert_eq!(entries(&file2, "carol"), carol, "pier changed another user's entry");
    assert_eq!(listed(&file2), ["carol", "erin", "frank"]);
    assert!(apache_verifies(&file2, "frank", "frank-pass"));
    assert!(apache_verifies(&file2, "carol", "carol-pass"));

    // And the daemon accepts all of them.
    let p = Pier::start_with(Options { extra_yaml: auth_yaml(&file2), ..Default::default() });
    for (u, pass) in [("carol", "carol-pass"), ("erin", "erin-pass"), ("frank", "frank-pass")] {
        assert_status(&with_auth(&p, &basic(u, pass), "GET", "/v2/"), 200, u);
    }
    assert_unauthorized(&with_auth(&p, &basic("frank", "carol-pass"), "GET", "/v2/"), "GET", "frank wrong");
    // The same file served after pier htpasswd edits (daemon side): dave's file.
    let p2 = Pier::start_with(Options { extra_yaml: auth_yaml(&file), ..Default::default() });
    assert_status(&with_auth(&p2, &basic("dave", "dave-pass"), "GET", "/v2/"), 200, "dave");
    assert_unauthorized(&with_auth(&p2, &basic("alice", "alice-pass-2"), "GET", "/v2/"), "GET", "alice removed");
}

// ---------------------------------------------------------------------------------------------
// 9. Read-only mode.

/// `(method, path, headers, body)` of a write request.
type WriteReq<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>);

#[track_caller]
fn assert_read_only(r: &Response, ctx: &str) {
    assert_eq!(r.status, 405, "{ctx}: expected 405 in read-only mode: {}", show(r));
    assert_api_version(r, ctx);
    assert_code(r, "GET", "UNSUPPORTED", ctx);
    let msg = r.json()["errors"][0]["message"].as_str().unwrap_or("").to_ascii_lowercase();
    assert!(
        msg.contains("read-only") || msg.contains("read only") || msg.contains("readonly"),
        "{ctx}: message does not mention read-only: {msg:?}"
    );
}

#[test]
fn read_only_mode_refuses_every_write() {
    let users = Users::new(&["admin"]);
    let mut p = start(&users, None);
    let repo = "ro/app";
    let layer = b"read-only layer".to_vec();
    let md = push_image_as(&p, "admin", repo, "v1", &layer);
    let ld = sha256_digest(&layer);
    let r = call(&p, Some("admin"), "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_status(&r, 202, "session before read-only");
    let session = location(&r);

    p.kill9();
    p.serve(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")]);
    let admin = Some("admin");
    // Reads work.
    assert_status(&get_as(&p, admin, "/v2/"), 200, "/v2/");
    let r = call(&p, admin, "GET", &format!("/v2/{repo}/manifests/v1"), &[("Accept", OCI_MANIFEST)], b"");
    assert_status(&r, 200, "GET manifest");
    assert_eq!(sha256_digest(&r.body), md);
    assert_status(&call(&p, admin, "HEAD", &format!("/v2/{repo}/manifests/{md}"), &[], b""), 200, "HEAD manifest");
    assert_eq!(get_as(&p, admin, &format!("/v2/{repo}/blobs/{ld}")).body, layer);
    assert_status(&call(&p, admin, "HEAD", &format!("/v2/{repo}/blobs/{ld}"), &[], b""), 200, "HEAD blob");
    assert_eq!(get_as(&p, admin, &format!("/v2/{repo}/tags/list")).json()["tags"], json!(["v1"]));
    assert_eq!(catalog_as(&p, admin), set(&[repo]));
    assert_status(&get_as(&p, admin, &format!("/v2/{repo}/referrers/{md}")), 200, "referrers");
    // Authentication still applies.
    assert_unauthorized(&get_as(&p, None, &format!("/v2/{repo}/tags/list")), "GET", "anonymous read");

    // Every write is refused.
    let new = b"new data".to_vec();
    let nd = sha256_digest(&new);
    let m2 = image_manifest((&ld, layer.len()), &[(&ld, layer.len())]);
    let writes: Vec<WriteReq> = vec![
        ("POST", format!("/v2/{repo}/blobs/uploads/"), vec![], vec![]),
        ("POST", format!("/v2/{repo}/blobs/uploads/?digest={nd}"), vec![], new.clone()),
        ("POST", format!("/v2/ro/other/blobs/uploads/?mount={ld}&from={repo}"), vec![], vec![]),
        ("PATCH", session.clone(), vec![("Content-Range", "0-7")], new.clone()),
        ("PUT", with_query(&session, &format!("digest={nd}")), vec![], new.clone()),
        ("DELETE", session.clone(), vec![], vec![]),
        ("PUT", format!("/v2/{repo}/manifests/v2"), vec![("Content-Type", OCI_MANIFEST)], m2.clone()),
        ("PUT", format!("/v2/{repo}/manifests/{}", sha256_digest(&m2)), vec![("Content-Type", OCI_MANIFEST)], m2),
        ("DELETE", format!("/v2/{repo}/manifests/v1"), vec![], vec![]),
        ("DELETE", format!("/v2/{repo}/manifests/{md}"), vec![], vec![]),
        ("DELETE", format!("/v2/{repo}/blobs/{ld}"), vec![], vec![]),
    ];
    for (method, path, headers, body) in &writes {
        let r = call(&p, admin, method, path, headers, body);
        assert_read_only(&r, &format!("{method} {path}"));
    }
    // Nothing changed.
    assert_eq!(get_as(&p, admin, &format!("/v2/{repo}/tags/list")).json()["tags"], json!(["v1"]));
    assert_status(&get_as(&p, admin, &format!("/v2/{repo}/manifests/{md}")), 200, "manifest kept");
    assert_eq!(get_as(&p, admin, &format!("/v2/{repo}/blobs/{ld}")).body, layer, "blob kept");
    assert_status(&call(&p, admin, "HEAD", &format!("/v2/{repo}/blobs/{nd}"), &[], b""), 404, "nothing new");
    assert_eq!(catalog_as(&p, admin), set(&[repo]), "no new repository");

    // Read-only without authentication as well.
    let q = Pier::start_with(Options {
        delete_enabled: true,
        env: vec![("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED".into(), "true".into())],
        ..Default::default()
    });
    assert_status(&q.get("/v2/"), 200, "read-only /v2/");
    assert_status(&q.get("/v2/_catalog"), 200, "read-only catalog");
    assert_read_only(&q.req("POST", "/v2/x/blobs/uploads/", &[], b""), "read-only POST without auth");
    assert_read_only(
        &q.req("PUT", "/v2/x/manifests/t", &[("Content-Type", OCI_MANIFEST)], &image_manifest((&nd, 8), &[])),
        "read-only PUT manifest without auth",
    );
    assert_read_only(&q.req("DELETE", &format!("/v2/x/blobs/{nd}"), &[], b""), "read-only DELETE without auth");
}

// ---------------------------------------------------------------------------------------------
// 10. Verified credentials are cached (bcrypt is deliberately slow).

#[test]
fn credentials_are_cached_across_requests() {
    // Cost 10: about 50 ms per verification here, so 200 uncached requests take ~10 s.
    let users = Users::with_cost(&["alice"], 10);
    let p = start(&users, None);
    let md = push_image_as(&p, "alice", "cache/app", "v1", b"cached layer");
    let auth = basic("alice", &pw("alice"));
    let headers = [("Authorization", auth.as_str()), ("Accept", OCI_MANIFEST)];
    let mut conn = Conn::open(p.addr);
    let started = Instant::now();
    for i in 0..200 {
        let r = conn.get("/v2/cache/app/manifests/v1", &headers);
        assert_eq!(r.status, 200, "request {i}: {}", show(&r));
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()), "request {i}");
        assert!(!r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")), "connection closed at {i}");
    }
    let took = started.elapsed();
    // Not a benchmark: without a cache this takes ~10 s; with one, a fraction of a second.
    assert!(took < Duration::from_secs(8), "200 authenticated GETs took {took:?}: are credentials cached?");

    // The cache never accepts a different password for a cached user, nor another user.
    assert_unauthorized(&with_auth(&p, &basic("alice", "wrong"), "GET", "/v2/"), "GET", "wrong password after caching");
    assert_unauthorized(
        &with_auth(&p, &basic("alice", &format!("{}x", pw("alice"))), "GET", "/v2/"),
        "GET",
        "longer password after caching",
    );
    assert_unauthorized(&with_auth(&p, &basic("bob", &pw("alice")), "GET", "/v2/"), "GET", "other user, same password");
    assert_status(&with_auth(&p, &auth, "GET", "/v2/"), 200, "still fine");
}
