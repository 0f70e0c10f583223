//! The CNCF Distribution registry (Debian's `docker-registry`, 2.8) as an upstream for pier's
//! remote-registry tests, optionally with **token auth** (`auth: token:`), and the token service
//! it then needs: `token_server.py`, run by Debian's `/usr/bin/python3` with python3-jwt and
//! python3-cryptography (`.ci/run` installs them), signing ES256 with a key whose certificate is
//! Distribution's `rootcertbundle`. Dropping either kills its process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::http::{request, strip_origin, try_request, with_digest, Response};
use super::image::sha256_digest;
use super::pki::{Ca, KeyType};
use super::systemd::free_addrs;
use super::wait::wait_until;

/// Debian's interpreter, which has python3-jwt (the `python3` on PATH may be another one).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// What Distribution's token configuration and the token service agree on.
pub const TOKEN_SERVICE: &str = "pier-test-registry";
pub const TOKEN_ISSUER: &str = "pier-test-token-issuer";

fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (.ci/run installs it)"))
}

/// The token service of `token_server.py` (see its docstring for what it grants to whom).
pub struct TokenServer {
    child: Child,
    pub port: u16,
    /// One JSON line per token request.
    pub requests_log: PathBuf,
    output_log: PathBuf,
    /// The signing certificate: Distribution's `rootcertbundle`.
    pub cert: PathBuf,
}

impl TokenServer {
    /// Starts the service with `users` (name, password) and a fresh ES256 key in `dir`.
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> TokenServer {
        let signer = Ca::root(dir, "token-signer", KeyType::EcP256);
        let users: serde_json::Map<String, Value> =
            users.iter().map(|(u, p)| (u.to_string(), Value::String(p.to_string()))).collect();
        let script = dir.join("token_server.py");
        std::fs::write(&script, include_str!("token_server.py")).unwrap();
        let requests_log = dir.join("token-requests.jsonl");
        let output_log = dir.join("token-server.log");
        let port_file = dir.join("token-server.port");
        let child = spawn_logged(
            Command::new(SYSTEM_PYTHON)
                .arg(&script)
                .arg(&signer.key)
                .arg(&signer.cert)
                .arg(TOKEN_ISSUER)
                .arg(Value::Object(users).to_string())
                .arg(&requests_log)
                .arg(&port_file),
            &output_log,
            "the token server (python3-jwt, python3-cryptography)",
        );
        let mut t = TokenServer { child, port: 0, requests_log, output_log, cert: signer.cert };
        let up = wait_until(Duration::from_secs(30), || port_file.exists());
        assert!(up, "the token server did not start:\n{}", t.output());
        t.port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        t
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output_log).unwrap_or_default()
    }

    /// Every token request so far (one JSON object each).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.requests_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A token for `scope`, asked for as `user` (the test's own pushes use it).
    pub fn token(&self, user: &str, password: &str, scope: &str) -> String {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let auth = format!("Basic {}", super::http::base64(format!("{user}:{password}").as_bytes()));
        let path = format!("/token?service={TOKEN_SERVICE}&scope={}", scope.replace(':', "%3A").replace(',', "%2C"));
        let r = request(addr, "GET", &path, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200, "token for {scope}: {}\n{}", r.text(), self.output());
        let v = r.json();
        v["token"].as_str().or(v["access_token"].as_str()).expect("a token").to_string()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `docker-registry serve` on a free loopback port, data in a directory of its own.
pub struct Distribution {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Distribution {
    /// Token auth against `tokens` (`auth: token:` with its realm, service, issuer and
    /// certificate).
    pub fn start_with_tokens(dir: &Path, tokens: &TokenServer) -> Distribution {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm(),
            tokens.cert.display()
        );
        Self::start_with(dir, &auth)
    }

    /// `extra_yaml`: top-level sections appended to the config.
    pub fn start_with(dir: &Path, extra_yaml: &str) -> Distribution {
        let addr = free_addrs(1)[0];
        let config = dir.join("registry2.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra_yaml}",
            dir.join("registry2-data").display()
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join("registry2.log");
        let child = spawn_logged(Command::new("docker-registry").arg("serve").arg(&config), &log, "docker-registry");
        let mut d = Distribution { child, addr, log };
        let up = wait_until(Duration::from_secs(30), || {
            try_request(addr, "GET", "/v2/", &[], b"").is_ok_and(|r| r.status == 200 || r.status == 401)
        });
        assert!(up, "docker-registry did not answer on {addr}; its log:\n{}", d.log_text());
        assert!(d.child.try_wait().unwrap().is_none(), "docker-registry exited:\n{}", d.log_text());
        d
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn req(&self, method: &str, path: &str, auth: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(b) = &bearer {
            all.push(("Authorization", b));
        }
        request(self.addr, method, path, &all, body)
    }

    /// Pushes a blob (POST, then PUT with the digest) with the bearer token `auth`, if any.
    pub fn push_blob(&self, auth: Option<&str>, repo: &str, data: &[u8]) -> String {
        let d = sha256_digest(data);
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), auth, &[], b"");
        assert_eq!(r.status, 202, "POST upload to docker-registry: {}\n{}", r.text(), self.log_text());
        let loc = strip_origin(r.header("location").expect("Location"));
        let r = self.req("PUT", &with_digest(&loc, &d), auth, &[("Content-Type", "application/octet-stream")], data);
        assert_eq!(r.status, 201, "PUT blob to docker-registry: {}", r.text());
        d
    }

    /// Pushes a manifest as `repo:reference`; returns its digest.
    pub fn push_manifest(
        &self,
        auth: Option<&str>,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let r =
            self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"), auth, &[("Content-Type", media_type)], body);
        assert_eq!(
            r.status,
            201,
            "PUT manifest {repo}:{reference} to docker-registry: {}\n{}",
            r.text(),
            self.log_text()
        );
        sha256_digest(body)
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hostile_registry.py` (see its docstring): broken and malicious answers on a registry origin,
/// and a storage origin its blob redirects lead to.
pub struct HostileRegistry {
    child: Child,
    pub registry_port: u16,
    pub storage_port: u16,
    requests_log: PathBuf,
    output_log: PathBuf,
}

impl HostileRegistry {
    /// Serves `blob`, requiring `user`:`password` on the registry origin.
    pub fn start(dir: &Path, user: &str, password: &str, blob: &[u8]) -> HostileRegistry {
        let script = dir.join("hostile_registry.py");
        std::fs::write(&script, include_str!("hostile_registry.py")).unwrap();
        let blob_file = dir.join("hostile-blob");
        std::fs::write(&blob_file, blob).unwrap();
        let requests_log = dir.join("hostile-requests.jsonl");
        let output_log = dir.join("hostile.log");
        let port_file = dir.join("hostile.ports");
        let child = spawn_logged(
            Command::new(SYSTEM_PYTHON)
                .arg(&script)
                .arg(user)
                .arg(password)
                .arg(&blob_file)
                .arg(&requests_log)
                .arg(&port_file),
            &output_log,
            "the hostile registry (python3)",
        );
        let mut h = HostileRegistry { child, registry_port: 0, storage_port: 0, requests_log, output_log };
        let up = wait_until(Duration::from_secs(30), || port_file.exists());
        assert!(
            up,
            "the hostile registry did not start:\n{}",
            std::fs::read_to_string(&h.output_log).unwrap_or_default()
        );
        let ports = std::fs::read_to_string(&port_file).unwrap();
        let mut it = ports.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        (h.registry_port, h.storage_port) = (it.next().unwrap(), it.next().unwrap());
        h
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.registry_port)
    }

    /// Every request so far: origin (`registry`/`storage`), path, whether it was authorized.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.requests_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
