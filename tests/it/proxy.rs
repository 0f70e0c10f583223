//! pier behind a reverse proxy: the real Debian `nginx`, terminating TLS with a certificate from
//! a throwaway CA and proxying to a plain-HTTP pier, configured the way registry guides show it
//! (`client_max_body_size 0`, `chunked_transfer_encoding on`, `Host $http_host`,
//! `X-Forwarded-Proto $scheme`, `proxy_read_timeout 900`, with and without request buffering).
//!
//! Covered: skopeo pushing and pulling a > 256 MiB multi-layer image through nginx; a path
//! prefix (`location /registry/` + `http.prefix`) driven with curl through nginx, following every
//! `Location`; and `Location` headers built from `X-Forwarded-Proto`/`X-Forwarded-Host` or from
//! `http.host`.

use crate::harness::*;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// nginx

/// A real nginx (master + one worker, not daemonised) on a free loopback port, serving TLS with
/// the given certificate. Stopped on drop.
struct Nginx {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nginx {
    /// Starts nginx with `locations` inside a `server { listen … ssl http2; … }` block.
    fn start(cert: &Cert, locations: &str) -> Nginx {
        for _attempt in 0..3 {
            match Self::try_start(cert, locations) {
                Ok(n) => return n,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("nginx did not start:\n{log}"),
            }
        }
        panic!("nginx: no free port after 3 attempts");
    }

    fn try_start(cert: &Cert, locations: &str) -> Result<Nginx, String> {
        let dir = tmpdir();
        let d = dir.path();
        // The worker runs as an unprivileged user when the tests run as root: let it in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let conf = format!(
            r#"worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name localhost;

        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        # disable any limits to avoid HTTP 413 for large image uploads
        client_max_body_size 0;
        # required to avoid HTTP 411
        chunked_transfer_encoding on;
{locations}
    }}
}}
"#,
            d = d.display(),
            crt = cert.cert.display(),
            key = cert.key.display(),
        );
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let stderr = std::fs::File::create(d.join("stderr.log")).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg(format!("daemon off; pid {}/nginx.pid; error_log {}/error.log warn;", d.display(), d.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx: {e} (is it installed? .ci/run installs it)"));
        let pid_file = d.join("nginx.pid");
        let mut n = Nginx { child: Some(child), port, dir };
        let mut exited = None;
        let ready = wait_until(Duration::from_secs(15), || {
            if let Ok(Some(st)) = n.child.as_mut().unwrap().try_wait() {
                exited = Some(st);
                return true;
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok() && pid_file.exists()
        });
        if let Some(st) = exited {
            n.child = None;
            return Err(format!("nginx exited ({st}):\n{}", n.logs()));
        }
        if !ready {
            return Err(format!("nginx is not listening on {port} after 15 s:\n{}", n.logs()));
        }
        Ok(n)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        self.read("access.log")
    }

    fn logs(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- nginx stderr ---\n{}\n--- nginx error.log ---\n{}\n--- nginx access.log (tail) ---\n{}",
            self.read("stderr.log"),
            tail(self.read("error.log")),
            tail(self.access_log())
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM to the master (by pid): it stops its worker and exits.
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            if wait_until(Duration::from_secs(10), || matches!(c.try_wait(), Ok(Some(_)))) {
                return;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `location` proxying to pier the way registry guides write it. `streaming` adds unbuffered
/// request bodies over HTTP/1.1 to the upstream (`proxy_request_buffering off` needs
/// `proxy_http_version 1.1` to stream chunked bodies); without it nginx's defaults apply
/// (buffered bodies, HTTP/1.0 to the upstream).
fn registry_location(path: &str, pier: &Pier, streaming: bool) -> String {
    let extra = if streaming {
        "            proxy_request_buffering off;\n            proxy_buffering off;\n            \
         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n"
    } else {
        ""
    };
    format!(
        r#"        location {path} {{
            proxy_pass                          http://127.0.0.1:{port};
            proxy_set_header  Host              $http_host;   # required for docker client's sake
            proxy_set_header  X-Real-IP         $remote_addr; # pass on real client's IP
            proxy_set_header  X-Forwarded-For   $proxy_add_x_forwarded_for;
            proxy_set_header  X-Forwarded-Proto $scheme;
            proxy_read_timeout                  900;
{extra}        }}
"#,
        port = pier.addr.port()
    )
}

// ---------------------------------------------------------------------------------------------
// A big image on disk

struct BigImage {
    manifest: Vec<u8>,
    /// (digest, size) of each layer.
    layers: Vec<(String, u64)>,
    total: u64,
}

impl BigImage {
    fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }
}

/// Writes an OCI layout holding one image tagged `tag` whose layers are tar files each holding a
/// nonce file and `size` bytes of xorshift data.
fn write_big_image(dir: &Path, tag: &str, sizes: &[usize], seed: u64) -> BigImage {
    let bdir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&bdir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let n = nonce();
    let mut layers = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, seed * 100 + i as u64);
        let tar = tar_archive(&[
            ("pier-big/", b""),
            (&format!("pier-big/nonce-{i}.txt"), n.as_bytes()),
            (&format!("pier-big/layer-{i}.bin"), &data),
        ]);
        drop(data);
        let d = sha256_digest(&tar);
        std::fs::write(bdir.join(d.trim_start_matches("sha256:")), &tar).unwrap();
        layers.push((d, tar.len() as u64));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"pier.test": "big"}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>()},
    }))
    .unwrap();
    let cd = sha256_digest(&config);
    std::fs::write(bdir.join(cd.trim_start_matches("sha256:")), &config).unwrap();
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": OCI_LAYER_TAR, "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let md = sha256_digest(&manifest);
    std::fs::write(bdir.join(md.trim_start_matches("sha256:")), &manifest).unwrap();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": md, "size": manifest.len(), "annotations": {REF_NAME: tag}}
    ]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let total = layers.iter().map(|l| l.1).sum();
    BigImage { manifest, layers, total }
}

/// Checks a pulled OCI layout holds `img` under `tag`: index entry, manifest bytes, every layer
/// (size and SHA-256 of the file).
fn assert_layout_has_big_image(dir: &Path, tag: &str, img: &BigImage) {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["annotations"][REF_NAME] == tag))
        .unwrap_or_else(|| panic!("no {tag} in pulled index.json: {index}"));
    assert_eq!(entry["digest"], img.digest(), "pulled manifest digest");
    let blob = |d: &str| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    assert!(std::fs::read(blob(&img.digest())).unwrap() == img.manifest, "pulled manifest bytes");
    for (d, size) in &img.layers {
        let f = blob(d);
        let len = std::fs::metadata(&f).unwrap_or_else(|e| panic!("pulled layer {d}: {e}")).len();
        assert_eq!(len, *size, "size of pulled layer {d}");
        assert_eq!(file_sha256(&f), *d, "content of pulled layer {d}");
    }
}

/// skopeo pushes a > 256 MiB three-layer image through nginx (TLS verified against the test CA),
/// inspects it, pulls it back and compares; checks the store and nginx's access log.
fn big_image_through_nginx(streaming: bool, seed: u64) {
    let pki = tmpdir();
    let ca = Ca::root(pki.path(), "ca", KeyType::EcP256);
    let server = ca.issue("nginx", KeyType::Rsa2048, KeyFormat::Pkcs8, Usage::Server);
    let certs = cert_dir(&pki.path().join("certs"), &ca.cert, None);
    let p = Pier::start();
    let ng = Nginx::start(&server, &registry_location("/v2/", &p, streaming));

    let r = curl(&["--cacert", s(&ca.cert), &ng.url("/v2/")]).expect(200, "GET /v2/ through nginx");
    assert_eq!(r.body, b"{}", "{}", ng.logs());

    let src = tmpdir();
    let mib = 1024 * 1024;
    let img = write_big_image(src.path(), "v1", &[90 * mib + 3, 90 * mib + 333, 80 * mib + 33_333], seed);
    assert!(img.total >= 256 * mib as u64, "image is only {} bytes", img.total);
    let reference = format!("docker://{}/big/image:v1", ng.host());
    let run = |args: &[&str]| {
        let out = skopeo_output(args);
        assert!(
            out.status.success(),
            "skopeo {args:?} through nginx (streaming: {streaming}) failed ({}):\n{}\n{}\n--- pier ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            ng.logs(),
            p.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t = Instant::now();
    run(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        s(&certs),
        &format!("oci:{}:v1", src.path().display()),
        &reference,
    ]);
    let push_time = t.elapsed();

    let raw = run(&["inspect", "--raw", "--tls-verify=true", "--cert-dir", s(&certs), &reference]);
    assert!(raw.as_bytes() == img.manifest, "manifest through nginx differs:\n{raw}");

    let dst = tmpdir();
    let t = Instant::now();
    run(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=true",
        "--src-cert-dir",
        s(&certs),
        &reference,
        &format!("oci:{}:v1", dst.path().display()),
    ]);
    let pull_time = t.elapsed();
    assert_layout_has_big_image(dst.path(), "v1", &img);

    // pier holds every blob complete, and the repository's tag points at the manifest.
    assert_store_blobs_complete(&p.root);
    for (d, size) in &img.layers {
        let f = store_blob_path(&p.root, d);
        assert_eq!(std::fs::metadata(&f).map(|m| m.len()).ok(), Some(*size), "{} in pier's store", d);
    }
    let r = get_manifest(&p, "big/image", "v1");
    assert_eq!(r.status, 200);
    assert!(r.body == img.manifest);

    // The uploads really went through nginx: each layer was finished with a PUT that got 201.
    let access = ng.access_log();
    let finished =
        access.lines().filter(|l| l.contains("\"PUT /v2/big/image/blobs/uploads/") && l.contains("\" 201 ")).count();
    assert!(finished >= img.layers.len(), "nginx saw {finished} finished blob uploads:\n{access}");
    // And they took the path the configuration asks for: nginx says (at `warn`) when it spools a
    // request body to disk.
    let spooled = ng.read("error.log").contains("a client request body is buffered to a temporary file");
    assert_eq!(spooled, !streaming, "request bodies spooled by nginx (streaming: {streaming}):\n{}", ng.logs());
    eprintln!("streaming {streaming}: pushed {} MiB in {push_time:?}, pulled in {pull_time:?}", img.total / mib as u64);
}

#[test]
fn skopeo_pushes_and_pulls_a_256_mib_image_through_nginx_unbuffered() {
    big_image_through_nginx(true, 41);
}

#[test]
fn skopeo_pushes_and_pulls_a_256_mib_image_through_nginx_with_default_buffering() {
    big_image_through_nginx(false, 42);
}

// ---------------------------------------------------------------------------------------------
// A path prefix through nginx

#[test]
fn prefix_behind_nginx_push_and_pull_following_every_location() {
    let pki = tmpdir();
    let ca = Ca::root(pki.path(), "ca", KeyType::Rsa2048);
    let server = ca.issue("nginx", KeyType::EcP256, KeyFormat::Sec1, Usage::Server);
    let p = Pier::start_with(Options { extra_yaml: "  prefix: /registry/\n".into(), ..Default::default() });
    let ng = Nginx::start(&server, &registry_location("/registry/", &p, true));
    let cafile = s(&ca.cert).to_string();
    let base = ng.url("/registry");
    let want = ng.url("/registry/v2/");
    let check = |what: &str, loc: &str| {
        assert!(loc.starts_with(&want), "{what}: Location {loc:?} should start with {want:?}\n{}", ng.logs());
    };

    let r = curl(&["--cacert", &cafile, &format!("{base}/v2/")]).expect(200, "GET /registry/v2/ through nginx");
    assert_eq!(r.body, b"{}");

    for (flag, repo, seed) in [("--http1.1", "pfx/h1", 1u64), ("--http2", "pfx/h2", 2)] {
        let tls = ["--cacert", cafile.as_str(), flag];
        // A layer in three PATCH chunks, and the config in one.
        let layer = random_bytes(5 * 1024 * 1024 + 11, 300 + seed);
        let ld = sha256_digest(&layer);
        curl_push_blob(&tls, &base, repo, &layer, &ld, 3, &|what, loc| check(&format!("{flag} {what}"), loc));
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"repo\":\"{repo}\"}}").into_bytes();
        let cd = sha256_digest(&config);
        curl_push_blob(&tls, &base, repo, &config, &cd, 1, &|what, loc| check(&format!("{flag} config {what}"), loc));
        // A monolithic POST ?digest= upload.
        let small = format!("small blob {repo} {}", nonce()).into_bytes();
        let sd = sha256_digest(&small);
        let f = pki.path().join("small");
        std::fs::write(&f, &small).unwrap();
        let r = curl(&cat(
            &tls,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", f.display()),
                &format!("{base}/v2/{repo}/blobs/uploads/?digest={sd}"),
            ],
        ))
        .expect(201, "monolithic POST");
        check(&format!("{flag} monolithic POST"), r.header("location").unwrap_or(""));

        let m = image_manifest((&cd, config.len()), &[(&ld, layer.len()), (&sd, small.len())]);
        let r = curl_put_manifest(&tls, &base, repo, "v1", OCI_MANIFEST, &m);
        check(&format!("{flag} PUT manifest"), r.header("location").unwrap_or(""));

        // Pull it back through nginx.
        let r =
            curl(&cat(&tls, &["-H", &format!("Accept: {OCI_MANIFEST}"), &format!("{base}/v2/{repo}/manifests/v1")]))
                .expect(200, "GET manifest through nginx");
        assert!(r.body == m, "manifest bytes");
        assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(&m).as_str()));
        for (d, data) in [(&ld, &layer), (&cd, &config), (&sd, &small)] {
            let r = curl(&cat(&tls, &[&format!("{base}/v2/{repo}/blobs/{d}")])).expect(200, "GET blob");
            assert!(r.body == **data, "blob {d} through nginx");
        }
        let r = curl(&cat(&tls, &[&format!("{base}/v2/{repo}/tags/list")])).expect(200, "tags/list");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["tags"], json!(["v1"]), "{v}");

        // A cross-repository mount answers with a Location under the prefix too.
        let r = curl(&cat(
            &tls,
            &[
                "-X",
                "POST",
                "--data-binary",
                "",
                &format!("{base}/v2/{repo}-mounted/blobs/uploads/?mount={ld}&from={repo}"),
            ],
        ))
        .expect(201, "mount");
        check(&format!("{flag} mount"), r.header("location").unwrap_or(""));
    }
    let r = curl(&["--cacert", &cafile, &format!("{base}/v2/_catalog")]).expect(200, "catalog");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    for repo in ["pfx/h1", "pfx/h2", "pfx/h1-mounted"] {
        assert!(v["repositories"].as_array().unwrap().iter().any(|r| r == repo), "{repo} in {v}");
    }

    // Straight at pier the prefix is required.
    assert_eq!(get_manifest(&p, "pfx/h1", "v1").status, 404, "without the prefix");
    let r = p.req("GET", "/registry/v2/pfx/h1/manifests/v1", &[("Accept", OCI_MANIFEST)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// Location headers from forwarded headers and http.host (no proxy needed)

const FORWARDED: [(&str, &str); 2] = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "reg.example:8443")];

fn post_upload(p: &Pier, path: &str, headers: &[(&str, &str)]) -> String {
    let r = p.req("POST", path, headers, b"");
    assert_eq!(r.status, 202, "POST {path}: {}", r.text());
    r.header("location").expect("Location").to_string()
}

#[test]
fn locations_honour_x_forwarded_proto_and_host() {
    let p = Pier::start();
    let fw = &FORWARDED;
    let origin = "https://reg.example:8443";

    // The whole upload flow: POST, PATCH, PUT, manifest PUT.
    let loc = post_upload(&p, "/v2/r/blobs/uploads/", fw);
    assert!(loc.starts_with(&format!("{origin}/v2/r/blobs/uploads/")), "POST Location {loc:?}");
    let data = b"forwarded layer".to_vec();
    let d = sha256_digest(&data);
    let r = p.req(
        "PATCH",
        &strip_origin(&loc),
        &[fw[0], fw[1], ("Content-Type", "application/octet-stream"), ("Content-Range", "0-14")],
        &data,
    );
    assert_eq!(r.status, 202, "PATCH: {}", r.text());
    let loc = r.header("location").unwrap().to_string();
    assert!(loc.starts_with(&format!("{origin}/v2/r/blobs/uploads/")), "PATCH Location {loc:?}");
    let r = p.req("PUT", &with_digest(&strip_origin(&loc), &d), fw, b"");
    assert_eq!(r.status, 201, "PUT: {}", r.text());
    assert_eq!(r.header("location"), Some(format!("{origin}/v2/r/blobs/{d}").as_str()), "PUT Location");
    let cfg = b"{}";
    let cd = push_blob(&p, "r", cfg);
    let m = image_manifest((&cd, cfg.len()), &[(&d, data.len())]);
    let r = p.req("PUT", "/v2/r/manifests/v1", &[fw[0], fw[1], ("Content-Type", OCI_MANIFEST)], &m);
    assert_eq!(r.status, 201, "PUT manifest: {}", r.text());
    let loc = r.header("location").unwrap_or("");
    assert!(loc.starts_with(&format!("{origin}/v2/r/manifests/")), "manifest Location {loc:?}");
    // Monolithic POST and mount.
    let d2 = sha256_digest(b"mono");
    let r = p.req("POST", &format!("/v2/r/blobs/uploads/?digest={d2}"), fw, b"mono");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("{origin}/v2/r/blobs/{d2}").as_str()), "monolithic POST");
    let r = p.req("POST", &format!("/v2/other/blobs/uploads/?mount={d}&from=r"), fw, b"");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("{origin}/v2/other/blobs/{d}").as_str()), "mount");

    // Behind a chain of proxies the first (client-facing) value wins.
    let loc = post_upload(
        &p,
        "/v2/r/blobs/uploads/",
        &[("X-Forwarded-Proto", "https, http"), ("X-Forwarded-Host", "reg.example:8443, internal:5000")],
    );
    assert!(loc.starts_with(&format!("{origin}/v2/r/blobs/uploads/")), "chained Location {loc:?}");
    // Only the scheme forwarded: the host comes from Host.
    let loc = post_upload(&p, "/v2/r/blobs/uploads/", &[("X-Forwarded-Proto", "https")]);
    assert!(loc.starts_with(&format!("https://{}/v2/r/blobs/uploads/", p.addr)), "proto only: {loc:?}");
    // Nothing forwarded: the request's own scheme and Host.
    let loc = post_upload(&p, "/v2/r/blobs/uploads/", &[]);
    assert!(loc.starts_with(&format!("http://{}/v2/r/blobs/uploads/", p.addr)), "plain: {loc:?}");
}

#[test]
fn http_host_overrides_forwarded_headers_and_combines_with_the_prefix() {
    let p = Pier::start_with(Options { extra_yaml: "  host: https://reg.example\n".into(), ..Default::default() });
    let other = [("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "internal:5000")];
    for headers in [&other[..], &[]] {
        let loc = post_upload(&p, "/v2/r/blobs/uploads/", headers);
        assert!(loc.starts_with("https://reg.example/v2/r/blobs/uploads/"), "http.host Location {loc:?}");
        let d = sha256_digest(loc.as_bytes());
        let r = p.req("PUT", &with_digest(&strip_origin(&loc), &d), headers, loc.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("location"), Some(format!("https://reg.example/v2/r/blobs/{d}").as_str()));
    }

    let p = Pier::start_with(Options {
        extra_yaml: "  host: https://reg.example:8443/\n  prefix: /registry/\n".into(),
        ..Default::default()
    });
    let loc = post_upload(&p, "/registry/v2/r/blobs/uploads/", &other);
    assert!(
        loc.starts_with("https://reg.example:8443/registry/v2/r/blobs/uploads/"),
        "http.host + http.prefix Location {loc:?}"
    );
    let d = sha256_digest(b"x");
    let r = p.req("PUT", &with_digest(&strip_origin(&loc), &d), &[], b"x");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("https://reg.example:8443/registry/v2/r/blobs/{d}").as_str()));
}
