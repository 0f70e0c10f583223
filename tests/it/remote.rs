//! A remote registry as the source of an export (`pier export --from URL`, `src/remote`),
//! against real registries over real sockets: pier itself over TLS with htpasswd (Basic auth)
//! and over plain HTTP anonymously, and CNCF Distribution 2.8 (Debian's `docker-registry`) with
//! **token auth** and a token service of the test's own (`harness/token_server.py`), so the
//! whole Bearer flow runs against the real Distribution. Every manifest and blob read through
//! the client must be byte for byte what was pushed; wrong or missing credentials must end in
//! a clear denial that never shows the password.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use pier::bundle::source::{BundleSource, SourceError};
use pier::core::{Digest, RepoName, Tag};
use pier::remote::{Credentials, RemoteConfig, RemoteRegistry, Secret};
use serde_json::json;

use crate::harness::*;

/// Every test user's password: distinctive, so output and logs can be searched for it.
const PASSWORD: &str = "Rem0te.pw.Zq7!";
const WRONG_PASSWORD: &str = "Wr0ng.pw.Xk2?";

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

fn digest(d: &str) -> Digest {
    Digest::parse(d).unwrap()
}

fn client(url: &str, user: Option<(&str, &str)>, ca: Option<&Path>, page_size: u32) -> RemoteRegistry {
    let mut config = RemoteConfig::new(url);
    config.credentials =
        user.map(|(u, p)| Credentials { username: u.to_string(), password: Secret::new(p.to_string()) });
    config.ca_files = ca.map(|c| vec![c.to_path_buf()]).unwrap_or_default();
    config.page_size = page_size;
    RemoteRegistry::connect(&config).unwrap_or_else(|e| panic!("client for {url}: {e}"))
}

/// Reads `digest` of `repo` through the source whole; asserts the size it announced and the
/// bytes.
#[track_caller]
fn assert_blob(src: &dyn BundleSource, repo_name: &str, data: &[u8]) {
    let d = sha256_digest(data);
    let mut blob = src.open_blob(&repo(repo_name), &digest(&d)).unwrap_or_else(|e| panic!("blob {repo_name}@{d}: {e}"));
    assert_eq!(blob.size, data.len() as u64, "announced size of {repo_name}@{d}");
    let mut got = Vec::new();
    blob.reader.read_to_end(&mut got).unwrap_or_else(|e| panic!("reading {repo_name}@{d}: {e}"));
    assert_eq!(got.len(), data.len(), "length of {repo_name}@{d}");
    assert!(got == data, "bytes of {repo_name}@{d} differ");
}

/// `img` as `repo:tag` through the source: by tag and by digest, then every blob.
#[track_caller]
fn assert_image_through(src: &dyn BundleSource, repo_name: &str, tag_name: &str, img: &Image) {
    let m =
        src.manifest_by_tag(&repo(repo_name), &tag(tag_name)).unwrap_or_else(|e| panic!("{repo_name}:{tag_name}: {e}"));
    assert_eq!(m.digest.as_str(), img.digest(), "digest of {repo_name}:{tag_name}");
    assert!(m.bytes == img.manifest, "manifest bytes of {repo_name}:{tag_name}");
    assert_eq!(m.media_type, OCI_MANIFEST);
    let m = src.manifest_by_digest(&repo(repo_name), &digest(&img.digest())).unwrap();
    assert!(m.bytes == img.manifest, "manifest bytes of {repo_name}@{}", img.digest());
    for b in img.blobs() {
        assert_blob(src, repo_name, b);
    }
}

/// An artifact (a signature-like manifest) whose subject is `subject`: its blobs and manifest.
struct Artifact {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn artifact_for(subject: &Image) -> Artifact {
    let config = b"{}".to_vec();
    let layer = format!("signature of {} {}", subject.digest(), nonce()).into_bytes();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.pier.test.signature",
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.pier.test.signature.v1", "digest": sha256_digest(&layer), "size": layer.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest(), "size": subject.manifest.len()},
    }))
    .unwrap();
    Artifact { config, layer, manifest }
}

/// The referrers tag schema's index for `artifact` (what clients push where the registry has no
/// referrers API).
fn fallback_index(artifact: &Artifact) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256_digest(&artifact.manifest),
                       "size": artifact.manifest.len(), "artifactType": "application/vnd.pier.test.signature"}],
    }))
    .unwrap()
}

/// The denial `result` must be; its message (which must not hold any password).
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, SourceError>, what: &str) -> String {
    let e = result.expect_err(&format!("{what}: access must be denied"));
    let text = e.to_string();
    assert!(matches!(e, SourceError::Denied { .. }), "{what}: want Denied, got {e:?}");
    assert!(!text.contains(PASSWORD) && !text.contains(WRONG_PASSWORD), "{what}: the message shows a password: {text}");
    assert!(!format!("{e:?}").contains(PASSWORD) && !format!("{e:?}").contains(WRONG_PASSWORD));
    text
}

// ---------------------------------------------------------------------------------------------
// pier as the upstream

fn htpasswd_file(dir: &Path, user: &str) -> std::path::PathBuf {
    let out = run(Command::new("htpasswd").args(["-nbB", "-C", "4", user, PASSWORD]));
    let path = dir.join("htpasswd");
    std::fs::write(&path, out.trim().to_string() + "\n").unwrap();
    path
}

/// A pier over TLS (a test CA) with htpasswd (user `alice`), holding `team/app:v1` (an image)
/// and `team/app:multi` (an index of an amd64 and an arm64 image), pushed with curl.
struct TlsUpstream {
    dir: tempfile::TempDir,
    ca: Ca,
    p: Pier,
    base: String,
    img: Image,
    amd: Image,
    arm: Image,
    index: Vec<u8>,
}

impl TlsUpstream {
    /// `image`: (name, layer sizes, seed) of `v1`; `amd`, `arm`: (name, layer size, seed).
    fn start(image: (&str, &[usize], u64), amd: (&str, usize, u64), arm: (&str, usize, u64)) -> TlsUpstream {
        let dir = tmpdir();
        let ca = Ca::root(dir.path(), "ca", KeyType::EcP256);
        let server = ca.issue("server", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Server);
        let htpasswd = htpasswd_file(dir.path(), "alice");
        let p = Pier::start_with(Options {
            extra_yaml: format!(
                "{}auth:\n  htpasswd:\n    realm: pier\n    path: {}\n",
                tls_yaml(&server.cert, &server.key, &[]),
                htpasswd.display()
            ),
            ..Default::default()
        });
        let base = format!("https://127.0.0.1:{}", p.addr.port());
        let creds = format!("alice:{PASSWORD}");
        let tls: Vec<&str> = vec!["--cacert", s(&ca.cert), "-u", &creds];
        let push = |repo_name: &str, tag_name: &str, img: &Image| {
            for b in img.blobs() {
                curl_push_blob(&tls, &base, repo_name, b, &sha256_digest(b), 1, &|_, _| {});
            }
            curl_put_manifest(&tls, &base, repo_name, tag_name, OCI_MANIFEST, &img.manifest);
        };
        let img = Image::new(image.0, "amd64", image.1, image.2);
        push("team/app", "v1", &img);
        let amd = Image::new(amd.0, "amd64", &[amd.1], amd.2);
        let arm = Image::new(arm.0, "arm64", &[arm.1], arm.2);
        push("team/app", &amd.digest(), &amd);
        push("team/app", &arm.digest(), &arm);
        let index = image_index(&[&amd, &arm]);
        curl_put_manifest(&tls, &base, "team/app", "multi", OCI_INDEX, &index);
        TlsUpstream { dir, ca, p, base, img, amd, arm, index }
    }
}

/// pier over TLS (a test CA) with htpasswd: the client trusts the CA through `ca_files`, sends
/// Basic credentials after pier's challenge, and reads images and an index byte for byte; a
/// wrong password and no password are denied; without the CA the TLS handshake fails.
#[test]
fn pier_over_tls_with_basic_auth_is_read_byte_for_byte() {
    let TlsUpstream { dir: _dir, ca, p, base, img, amd, arm, index } =
        TlsUpstream::start(("tls", &[300_000, 2_500_000], 11), ("multi-amd", 100_000, 12), ("multi-arm", 120_000, 13));

    let src = client(&base, Some(("alice", PASSWORD)), Some(&ca.cert), 1000);
    assert_eq!(src.repositories().unwrap(), vec![repo("team/app")]);
    assert_eq!(src.tags(&repo("team/app")).unwrap(), vec![tag("multi"), tag("v1")]);
    assert_image_through(&src, "team/app", "v1", &img);
    let m = src.manifest_by_tag(&repo("team/app"), &tag("multi")).unwrap();
    assert_eq!((m.digest.as_str(), m.media_type.as_str()), (sha256_digest(&index).as_str(), OCI_INDEX));
    assert!(m.bytes == index);
    for child in [&amd, &arm] {
        let m = src.manifest_by_digest(&repo("team/app"), &digest(&child.digest())).unwrap();
        assert!(m.bytes == child.manifest);
        for b in child.blobs() {
            assert_blob(&src, "team/app", b);
        }
    }
    assert!(matches!(src.manifest_by_tag(&repo("team/app"), &tag("nope")), Err(SourceError::NotFound { .. })));

    let wrong = client(&base, Some(("alice", WRONG_PASSWORD)), Some(&ca.cert), 1000);
    assert_denied(wrong.manifest_by_tag(&repo("team/app"), &tag("v1")), "a wrong password");
    assert_denied(wrong.repositories(), "a wrong password, catalog");
    let anonymous = client(&base, None, Some(&ca.cert), 1000);
    assert_denied(
        anonymous.open_blob(&repo("team/app"), &digest(&img.config_digest())).map(|b| b.size),
        "no credentials",
    );

    let untrusted = client(&base, Some(("alice", PASSWORD)), None, 1000);
    let e = untrusted.tags(&repo("team/app")).expect_err("a server certificate of an unknown CA must be refused");
    assert!(matches!(e, SourceError::Io { .. }), "{e:?}");
    assert!(format!("{e} {e:?}").contains("UnknownIssuer"), "the error should say why: {e} / {e:?}");
    let log = std::fs::read_to_string(&p.log_path).unwrap();
    assert!(!log.contains(PASSWORD) && !log.contains(WRONG_PASSWORD), "pier's log shows a password");
}

/// pier over plain HTTP, anonymous: catalog and tag lists come in pages (`n=2`, `Link`
/// headers) and are gathered whole; referrers come from the referrers API; what is missing is
/// NotFound.
#[test]
fn plain_http_pier_is_listed_page_by_page_and_gives_referrers() {
    let p = Pier::start();
    let url = format!("http://{}", p.host());
    let mut repos = Vec::new();
    for i in 0..5 {
        let name = format!("paged/r{i}");
        push_image_raw(&p, &name, "latest", &Image::new(&format!("r{i}"), "amd64", &[1000], 20 + i));
        repos.push(repo(&name));
    }
    let img = Image::new("tagged", "amd64", &[50_000, 70_000], 30);
    for t in ["a", "b", "c", "d", "e"] {
        push_image_raw(&p, "paged/tags", t, &img);
    }
    repos.push(repo("paged/tags"));
    repos.sort();
    let artifact = artifact_for(&img);
    push_blob(&p, "paged/tags", &artifact.config);
    push_blob(&p, "paged/tags", &artifact.layer);
    let artifact_digest =
        push_manifest(&p, "paged/tags", &sha256_digest(&artifact.manifest), OCI_MANIFEST, &artifact.manifest);

    let src = client(&url, None, None, 2);
    assert_eq!(src.repositories().unwrap(), repos);
    assert_eq!(src.tags(&repo("paged/tags")).unwrap(), ["a", "b", "c", "d", "e"].map(tag).to_vec());
    let pages = p.log().matches("GET /v2/paged/tags/tags/list ").count();
    assert!(pages >= 3, "5 tags in pages of 2 take 3 requests; pier logged {pages}");
    assert_image_through(&src, "paged/tags", "c", &img);
    assert_eq!(src.referrers(&repo("paged/tags"), &digest(&img.digest())).unwrap(), vec![digest(&artifact_digest)]);
    let m = src.manifest_by_digest(&repo("paged/tags"), &digest(&artifact_digest)).unwrap();
    assert!(m.bytes == artifact.manifest);
    assert_blob(&src, "paged/tags", &artifact.layer);
    assert!(src.referrers(&repo("paged/tags"), &digest(&artifact_digest)).unwrap().is_empty());

    let missing = sha256_digest(b"not pushed");
    assert!(matches!(src.open_blob(&repo("paged/tags"), &digest(&missing)), Err(SourceError::NotFound { .. })));
    assert!(matches!(src.manifest_by_tag(&repo("paged/none"), &tag("x")), Err(SourceError::NotFound { .. })));
    let closed = client(&format!("http://{}", free_addrs(1)[0]), None, None, 2);
    assert!(matches!(closed.tags(&repo("paged/tags")), Err(SourceError::Io { .. })));
}

// ---------------------------------------------------------------------------------------------
// Distribution with token auth as the upstream

/// Distribution 2.8 with `auth: token`: the client follows the Bearer challenge to the token
/// service (Basic credentials there), caches one token per scope, lists the catalog (its own
/// scope) and tags page by page, reads images, an index and, since Distribution 2.8 has no
/// referrers API (404), a referrer through the tag schema. Anonymous gets only what the token
/// service grants anonymously; a wrong password is denied with the token service's reason.
#[test]
fn distribution_with_token_auth_is_read_through_the_bearer_flow() {
    let dir = tmpdir();
    let tokens = TokenServer::start(dir.path(), &[("alice", PASSWORD)]);
    let d = Distribution::start_with_tokens(dir.path(), &tokens);
    let token = tokens.token("alice", PASSWORD, "repository:lab/app:pull,push");
    let push = |repo_name: &str, token: &str, tag_name: &str, img: &Image| {
        for b in img.blobs() {
            d.push_blob(Some(token), repo_name, b);
        }
        d.push_manifest(Some(token), repo_name, tag_name, OCI_MANIFEST, &img.manifest);
    };
    let img = Image::new("dist", "amd64", &[400_000, 1_500_000], 40);
    push("lab/app", &token, "v1", &img);
    push("lab/app", &token, "v2", &img);
    let amd = Image::new("dist-amd", "amd64", &[90_000], 41);
    let arm = Image::new("dist-arm", "arm64", &[95_000], 42);
    push("lab/app", &token, &amd.digest(), &amd);
    push("lab/app", &token, &arm.digest(), &arm);
    let index = image_index(&[&amd, &arm]);
    d.push_manifest(Some(&token), "lab/app", "multi", OCI_INDEX, &index);
    let artifact = artifact_for(&img);
    d.push_blob(Some(&token), "lab/app", &artifact.config);
    d.push_blob(Some(&token), "lab/app", &artifact.layer);
    let artifact_digest =
        d.push_manifest(Some(&token), "lab/app", &sha256_digest(&artifact.manifest), OCI_MANIFEST, &artifact.manifest);
    let fallback_tag = format!("sha256-{}", img.digest().trim_start_matches("sha256:"));
    d.push_manifest(Some(&token), "lab/app", &fallback_tag, OCI_INDEX, &fallback_index(&artifact));
    let public_token = tokens.token("alice", PASSWORD, "repository:public/base:pull,push");
    let base_img = Image::new("public", "amd64", &[60_000], 43);
    push("public/base", &public_token, "1.0", &base_img);
    let before = tokens.requests().len();

    let src = client(&d.url(), Some(("alice", PASSWORD)), None, 2);
    assert_eq!(src.repositories().unwrap(), vec![repo("lab/app"), repo("public/base")]);
    let mut want_tags = vec![tag(&fallback_tag), tag("multi"), tag("v1"), tag("v2")];
    want_tags.sort();
    assert_eq!(src.tags(&repo("lab/app")).unwrap(), want_tags);
    assert_image_through(&src, "lab/app", "v1", &img);
    let m = src.manifest_by_tag(&repo("lab/app"), &tag("multi")).unwrap();
    assert!(m.bytes == index && m.media_type == OCI_INDEX);
    for child in [&amd, &arm] {
        assert!(src.manifest_by_digest(&repo("lab/app"), &digest(&child.digest())).unwrap().bytes == child.manifest);
        for b in child.blobs() {
            assert_blob(&src, "lab/app", b);
        }
    }
    assert_eq!(src.referrers(&repo("lab/app"), &digest(&img.digest())).unwrap(), vec![digest(&artifact_digest)]);
    assert!(src.referrers(&repo("lab/app"), &digest(&amd.digest())).unwrap().is_empty());
    assert_image_through(&src, "public/base", "1.0", &base_img);

    // One token per scope, each fetched with alice's credentials, however many requests.
    let asked: Vec<serde_json::Value> = tokens.requests()[before..].to_vec();
    let mut scopes: Vec<String> = asked.iter().map(|r| r["scopes"].to_string()).collect();
    assert!(
        asked.iter().all(|r| r["credentials"] == true && r["user"] == "alice" && r["granted"] == true),
        "{asked:?}"
    );
    let n = scopes.len();
    scopes.sort();
    scopes.dedup();
    assert_eq!(scopes.len(), n, "a scope's token was fetched more than once: {asked:?}");
    assert_eq!(n, 3, "catalog, lab/app and public/base: {asked:?}");

    let anonymous = client(&d.url(), None, None, 1000);
    assert_image_through(&anonymous, "public/base", "1.0", &base_img);
    let text = assert_denied(anonymous.manifest_by_tag(&repo("lab/app"), &tag("v1")), "anonymous, private repository");
    assert!(text.contains("UNAUTHORIZED"), "the registry's error code should be shown: {text}");

    let wrong = client(&d.url(), Some(("alice", WRONG_PASSWORD)), None, 1000);
    let text = assert_denied(wrong.manifest_by_tag(&repo("lab/app"), &tag("v1")), "a wrong password");
    assert!(text.contains("invalid username or password"), "the token service's reason should be shown: {text}");
    let log = d.log_text() + &tokens.output();
    assert!(!log.contains(PASSWORD) && !log.contains(WRONG_PASSWORD), "a log shows a password");
}

// ---------------------------------------------------------------------------------------------
// A hostile upstream

/// What a broken or malicious registry answers ends in a precise error, never in a wrong
/// result: a blob redirect to another origin is followed **without** the credentials (the
/// storage host never sees them), a redirect loop stops, a broken blob download resumes with a
/// range request (and is an error where the registry cannot resume it), a
/// lying `Docker-Content-Digest` and an oversized manifest are refused, and pagination neither
/// leaves the registry's origin nor loops.
#[test]
fn a_hostile_registry_gets_no_credentials_across_origins_and_no_wrong_result() {
    let dir = tmpdir();
    let blob = random_bytes(300_000, 77);
    let h = HostileRegistry::start(dir.path(), "alice", PASSWORD, &blob);
    let src = client(&h.url(), Some(("alice", PASSWORD)), None, 1000);

    assert_blob(&src, "redirected", &blob);
    let requests = h.requests();
    let storage: Vec<_> = requests.iter().filter(|r| r["origin"] == "storage").collect();
    assert_eq!(storage.len(), 1, "one GET of the storage URL: {requests:?}");
    assert_eq!(storage[0]["authorization"], false, "credentials followed the redirect to another origin");
    assert!(requests.iter().any(|r| r["origin"] == "registry" && r["authorization"] == true), "{requests:?}");

    let d = digest(&sha256_digest(&blob));
    let e = src.open_blob(&repo("looping"), &d).map(|b| b.size).expect_err("a redirect loop must end");
    assert!(matches!(&e, SourceError::Invalid { detail, .. } if detail.contains("redirects")), "{e:?}");

    let mut short = src.open_blob(&repo("short"), &d).expect("the head of a short blob is fine");
    assert_eq!(short.size, blob.len() as u64);
    let mut got = Vec::new();
    let e = short.reader.read_to_end(&mut got).expect_err("a blob shorter than its Content-Length is an error");
    assert!(got.len() < blob.len(), "{} bytes read of {}", got.len(), blob.len());
    assert!(e.to_string().contains("blob short@") && e.to_string().contains("not 206"), "{e}");
    // Where the registry honours a range request, a broken download resumes where it stopped.
    assert_blob(&src, "flaky", &blob);
    let flaky: Vec<_> =
        h.requests().into_iter().filter(|r| r["path"].as_str().unwrap().starts_with("/v2/flaky/")).collect();
    assert_eq!(flaky.len(), 2, "the first GET and one resumption: {flaky:?}");

    let e = src.manifest_by_tag(&repo("lying"), &tag("v1")).expect_err("a lying Docker-Content-Digest");
    assert!(matches!(&e, SourceError::Invalid { detail, .. } if detail.contains("Docker-Content-Digest")), "{e:?}");
    let e = src.manifest_by_tag(&repo("huge"), &tag("v1")).expect_err("a manifest over 4 MiB");
    assert!(matches!(&e, SourceError::Invalid { .. }), "{e:?}");
    let e = src.tags(&repo("elsewhere")).expect_err("a next page on another host");
    assert!(matches!(&e, SourceError::Invalid { detail, .. } if detail.contains("elsewhere")), "{e:?}");
    let e = src.tags(&repo("circular")).expect_err("a next page that is this page");
    assert!(matches!(&e, SourceError::Invalid { detail, .. } if detail.contains("loop")), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// `pier export --from URL`

/// `pier export --from ARGS...` run in `cwd` (an empty directory: no config, no store), with
/// `stdin` on its standard input and `env` added; its output.
fn pier_export(cwd: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write as _;
    let mut cmd = Command::new(PIER);
    cmd.current_dir(cwd).arg("export").args(args).env_remove(pier::remote::options::PASSWORD_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `pier export` expecting success; returns the bundle's files (name → bytes), after
/// checking that every blob hashes to its name, that nothing but the bundle appeared in `cwd`
/// (no store, no config), and that no password shows in the output.
#[track_caller]
fn export_ok(
    cwd: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let out = pier_export(cwd, args, stdin, env);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pier export {args:?} failed ({}):\n{text}", out.status);
    assert!(!text.contains(PASSWORD), "the output shows the password:\n{text}");
    let entries: Vec<String> =
        std::fs::read_dir(cwd).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(
        entries,
        vec!["bundle.tar".to_string()],
        "pier export --from left more than the bundle in its directory"
    );
    let files = tar_files(&std::fs::read(cwd.join("bundle.tar")).unwrap());
    for (name, data) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(data), format!("sha256:{hex}"), "{name} does not hash to its name");
        }
    }
    files
}

/// The digests of the blobs in a bundle.
fn bundle_blobs(files: &std::collections::BTreeMap<String, Vec<u8>>) -> std::collections::BTreeSet<String> {
    files.keys().filter_map(|n| n.strip_prefix("blobs/sha256/")).map(|h| format!("sha256:{h}")).collect()
}

/// `pier-bundle.json`'s images as (repository, tag, digest).
fn bundle_images(files: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<(String, String, String)> {
    let meta: serde_json::Value = serde_json::from_slice(&files["pier-bundle.json"]).unwrap();
    let mut images: Vec<(String, String, String)> = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let field = |k: &str| i[k].as_str().unwrap_or("").to_string();
            (field("repository"), field("tag"), field("digest"))
        })
        .collect();
    images.sort();
    images
}

fn all_blobs(images: &[&Image]) -> std::collections::BTreeSet<String> {
    images.iter().flat_map(|i| i.blobs().into_iter().map(sha256_digest).chain([i.digest()])).collect()
}

/// The command end to end against pier over TLS with Basic auth (the password on standard
/// input) and against Distribution with token auth (the password in `PIER_REMOTE_PASSWORD`):
/// the bundle holds exactly the upstream's images, its blobs hash to their names and equal
/// the upstream's digests, and nothing else is written (no store, no config). A wrong password
/// fails with exit code 1 and "access denied" before any output exists, the password shown
/// nowhere.
#[test]
fn pier_export_from_a_remote_registry_writes_the_upstream_images() {
    let TlsUpstream { dir, ca, p, base, img, amd, arm, index } =
        TlsUpstream::start(("cli-tls", &[200_000, 1_200_000], 50), ("cli-amd", 80_000, 51), ("cli-arm", 90_000, 52));

    let out_dir = tmpdir();
    let ca_path = s(&ca.cert);
    let files = export_ok(
        out_dir.path(),
        &["--from", &base, "--ca", ca_path, "--username", "alice", "--password-stdin", "team/app", "-o", "bundle.tar"],
        &format!("{PASSWORD}\n"),
        &[],
    );
    let mut want = all_blobs(&[&img, &amd, &arm]);
    want.insert(sha256_digest(&index));
    assert_eq!(bundle_blobs(&files), want, "the bundle's blobs are the upstream's");
    assert_eq!(
        bundle_images(&files),
        vec![
            ("team/app".into(), "multi".into(), sha256_digest(&index)),
            ("team/app".into(), "v1".into(), img.digest())
        ]
    );

    let denied_dir = tmpdir();
    let out = pier_export(
        denied_dir.path(),
        &["--from", &base, "--ca", ca_path, "--username", "alice", "team/app:v1", "-o", "bundle.tar"],
        "",
        &[(pier::remote::options::PASSWORD_ENV, WRONG_PASSWORD)],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a wrong password: {text}");
    assert!(text.contains("access denied"), "a wrong password must say access denied: {text}");
    assert!(!text.contains(WRONG_PASSWORD) && !text.contains(PASSWORD), "the output shows a password: {text}");
    assert_eq!(std::fs::read_dir(denied_dir.path()).unwrap().count(), 0, "a denied export wrote something");
    let out = pier_export(
        denied_dir.path(),
        &["--from", &base, "--username", "alice", "--password", PASSWORD, "team/app:v1", "-o", "bundle.tar"],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "a password on the command line is a usage error");

    // Distribution with token auth, the password from the environment; the referrer comes
    // through the tag schema.
    let tokens = TokenServer::start(dir.path(), &[("alice", PASSWORD)]);
    let d = Distribution::start_with_tokens(dir.path(), &tokens);
    let token = tokens.token("alice", PASSWORD, "repository:lab/app:pull,push");
    for b in img.blobs() {
        d.push_blob(Some(&token), "lab/app", b);
    }
    d.push_manifest(Some(&token), "lab/app", "v1", OCI_MANIFEST, &img.manifest);
    let artifact = artifact_for(&img);
    d.push_blob(Some(&token), "lab/app", &artifact.config);
    d.push_blob(Some(&token), "lab/app", &artifact.layer);
    d.push_manifest(Some(&token), "lab/app", &sha256_digest(&artifact.manifest), OCI_MANIFEST, &artifact.manifest);
    let fallback_tag = format!("sha256-{}", img.digest().trim_start_matches("sha256:"));
    let fallback = fallback_index(&artifact);
    d.push_manifest(Some(&token), "lab/app", &fallback_tag, OCI_INDEX, &fallback);

    let out_dir = tmpdir();
    let files = export_ok(
        out_dir.path(),
        &["--from", &d.url(), "--username", "alice", "lab/app:v1", "-o", "bundle.tar"],
        "",
        &[(pier::remote::options::PASSWORD_ENV, PASSWORD)],
    );
    let blobs = bundle_blobs(&files);
    let mut want = all_blobs(&[&img]);
    want.extend([sha256_digest(&artifact.manifest), sha256_digest(&artifact.config), sha256_digest(&artifact.layer)]);
    assert!(want.is_subset(&blobs), "missing from the bundle: {:?}", want.difference(&blobs).collect::<Vec<_>>());
    assert_eq!(bundle_images(&files)[0], ("lab/app".into(), "v1".into(), img.digest()));

    let denied_dir = tmpdir();
    let out = pier_export(
        denied_dir.path(),
        &["--from", &d.url(), "--username", "alice", "--password-stdin", "lab/app:v1", "-o", "bundle.tar"],
        WRONG_PASSWORD,
        &[],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a wrong password: {text}");
    assert!(text.contains("access denied") && text.contains("invalid username or password"), "{text}");
    assert!(!text.contains(WRONG_PASSWORD), "the output shows the password: {text}");
    assert_eq!(std::fs::read_dir(denied_dir.path()).unwrap().count(), 0, "a denied export wrote something");
    let logs = d.log_text() + &tokens.output() + &p.log();
    assert!(!logs.contains(PASSWORD) && !logs.contains(WRONG_PASSWORD), "a log shows a password");
}

/// `--all` from an anonymous plain-HTTP pier: every tag of every repository (catalog and tag
/// lists paged by the registry), the referrers from the referrers API; `pier import` of that
/// bundle at another pier serves the same images.
#[test]
fn pier_export_from_all_of_an_anonymous_registry() {
    let p = Pier::start();
    let a = Image::new("all-a", "amd64", &[150_000], 60);
    let b = Image::new("all-b", "arm64", &[160_000, 10_000], 61);
    push_image_raw(&p, "one/a", "1", &a);
    push_image_raw(&p, "one/a", "2", &a);
    push_image_raw(&p, "two/b", "latest", &b);
    let artifact = artifact_for(&b);
    push_blob(&p, "two/b", &artifact.config);
    push_blob(&p, "two/b", &artifact.layer);
    push_manifest(&p, "two/b", &sha256_digest(&artifact.manifest), OCI_MANIFEST, &artifact.manifest);
    let out_dir = tmpdir();
    let url = format!("http://{}", p.host());
    let files = export_ok(out_dir.path(), &["--from", &url, "--all", "-o", "bundle.tar"], "", &[]);
    let mut want = all_blobs(&[&a, &b]);
    want.extend([sha256_digest(&artifact.manifest), sha256_digest(&artifact.config), sha256_digest(&artifact.layer)]);
    assert_eq!(bundle_blobs(&files), want);
    assert_eq!(
        bundle_images(&files),
        vec![
            ("one/a".into(), "1".into(), a.digest()),
            ("one/a".into(), "2".into(), a.digest()),
            ("two/b".into(), "latest".into(), b.digest())
        ]
    );

    // The site's side: `pier import` into an empty pier serves every image byte for byte, the
    // referrer with its subject.
    let site = Pier::start();
    run_logged(
        &site,
        Command::new(PIER).arg("import").arg("--config").arg(&site.config).arg(out_dir.path().join("bundle.tar")),
    );
    assert_image(&site, "one/a", "1", &a);
    assert_image(&site, "one/a", "2", &a);
    assert_image(&site, "two/b", "latest", &b);
    let r = site.get(&format!("/v2/two/b/referrers/{}", b.digest()));
    assert_eq!(r.status, 200, "referrers at the site: {}", r.text());
    assert_eq!(r.json()["manifests"][0]["digest"], sha256_digest(&artifact.manifest), "{}", r.text());
}

/// Memory does not grow with the blobs: a 160 MiB layer goes from the registry into the bundle
/// with the client's peak RSS far below it (`/usr/bin/time`; about 21 MiB measured in a debug
/// build: the bound leaves a wide margin and still fails if a blob were held whole).
#[test]
fn pier_export_from_streams_blobs_in_bounded_memory() {
    const LAYER: usize = 160 << 20;
    const RSS_BOUND_KIB: u64 = 64 << 10;
    let p = Pier::start();
    let layer = random_bytes(LAYER, 90);
    let img = Image::from_layers("big", "amd64", vec![layer]);
    push_image_raw(&p, "big/one", "v1", &img);
    let out_dir = tmpdir();
    let bundle = out_dir.path().join("bundle.tar");
    let rss_file = out_dir.path().join("rss");
    let url = format!("http://{}", p.host());
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(PIER)
        .args(["export", "--from", &url, "big/one:v1", "-o"])
        .arg(&bundle);
    run(&mut cmd);
    let rss_kib: u64 = std::fs::read_to_string(&rss_file).unwrap().trim().parse().unwrap();
    assert!(
        rss_kib < RSS_BOUND_KIB,
        "pier export --from peaked at {rss_kib} KiB for a {} MiB layer (bound {RSS_BOUND_KIB} KiB)",
        LAYER >> 20
    );
    let files = tar_files(&std::fs::read(&bundle).unwrap());
    assert_eq!(bundle_blobs(&files), all_blobs(&[&img]));
    let layer_name = format!("blobs/sha256/{}", img.layer_digests()[0].trim_start_matches("sha256:"));
    assert_eq!(sha256_digest(&files[&layer_name]), img.layer_digests()[0]);
}
