//! Users' docker-compose files (`tests/it/engine/compose/<case>/`), as the registry:2 guides
//! have them, with only `image: registry:2` changed to pier's image: `docker-compose up -d`,
//! `docker login` where the registry asks for credentials, `docker push`, `docker pull` after
//! `docker rmi`, `docker restart` of the registry's container, `docker-compose down && up -d`,
//! and a pull again: the data stays in the user's `./data`. In the htpasswd case (the compose
//! file of issue 11) `./data` first holds an image that registry:2 (Debian's `docker-registry`,
//! as root) stored there: pier's image takes the root-owned tree over, imports it and serves it.
//!
//! The test copies a case into a directory of its own and changes only what the machine needs:
//! published ports go to 127.0.0.1 and a free port (`"5000:5000"` → `"127.0.0.1:P:5000"`), the
//! credentials file is made with `htpasswd -Bbc`, the TLS certificate with `openssl`. nginx's
//! image (`nginx:alpine` in the files) is built in the engine from the host's nginx (no image
//! can be downloaded here), configured like the official image: `/etc/nginx/conf.d/*.conf`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

struct Case {
    name: &'static str,
    /// The published port in the file (`"N:N"`), replaced by `127.0.0.1:PORT:N`.
    published: u16,
    https: bool,
    auth: bool,
    /// The host directory mounted as the data directory.
    data: &'static str,
    /// `./data` already holds an image that Debian's `docker-registry` (registry:2) stored there
    /// as root, pushed by the engine before the switch.
    registry2_data: bool,
}

#[test]
fn compose_plain() {
    compose_case(Case {
        name: "plain",
        published: 5000,
        https: false,
        auth: false,
        data: "data",
        registry2_data: false,
    });
}

#[test]
fn compose_htpasswd_with_data_in_slash_data() {
    compose_case(Case {
        name: "htpasswd",
        published: 5000,
        https: false,
        auth: true,
        data: "data",
        registry2_data: true,
    });
}

#[test]
fn compose_nginx_tls_in_front() {
    compose_case(Case { name: "nginx", published: 443, https: true, auth: true, data: "data", registry2_data: false });
}

#[test]
fn compose_nginx_tls_with_http_prefix() {
    compose_case(Case {
        name: "prefix",
        published: 443,
        https: true,
        auth: false,
        data: "data",
        registry2_data: false,
    });
}

fn compose_case(case: Case) {
    let engine = Dockerd::start();
    pier_image(&engine);
    if case.https {
        nginx_image(&engine);
    }
    let work = tmpdir();
    let dir = work.path().join(case.name);
    copy_tree(&repo_root().join("tests/it/engine/compose").join(case.name), &dir);
    let port = free_port();
    let file = dir.join("docker-compose.yml");
    let yml = std::fs::read_to_string(&file).expect("read compose file");
    let from = format!("{0}:{0}", case.published);
    assert!(yml.contains(&from), "{} does not publish {from}", case.name);
    std::fs::write(&file, yml.replace(&from, &format!("127.0.0.1:{port}:{}", case.published))).unwrap();
    if case.auth {
        std::fs::create_dir_all(dir.join("auth")).unwrap();
        run(Command::new("htpasswd").arg("-Bbc").arg(dir.join("auth/registry.password")).args([USER, PASSWORD]));
    }
    if case.https {
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(dir.join("certs/domain.key"))
            .arg("-out")
            .arg(dir.join("certs/domain.crt")));
    }
    let old_image = case.registry2_data.then(|| registry2_wrote(&engine, &dir.join(case.data), work.path()));
    let project = format!("pier{}", case.name);
    let compose = |args: &[&str]| engine.run(&mut engine.compose(&dir, &project, args));
    let scheme = if case.https { "https" } else { "http" };
    let v2 = format!("{scheme}://127.0.0.1:{port}/v2/");
    let up = |what: &str| {
        let start = Instant::now();
        compose(&["up", "-d"]);
        wait_v2(&v2, Duration::from_secs(60));
        eprintln!("{}: {what}: docker-compose up -d -> first answered /v2/: {:?}", case.name, start.elapsed());
    };
    up("first start");

    let registry = format!("127.0.0.1:{port}");
    if case.auth {
        let refused = output(&mut engine.docker(&["login", "-u", USER, "-p", "wrong", &registry]));
        assert!(!refused.status.success(), "docker login with a wrong password succeeded");
        engine.d(&["login", "-u", USER, "-p", PASSWORD, &registry]);
    }
    if let Some((old_name, old_id)) = &old_image {
        // What registry:2 stored is there, imported at the first start.
        let here = format!("{registry}/{}", old_name.split_once('/').unwrap().1);
        engine.d(&["rmi", old_name]);
        engine.d(&["pull", &here]);
        assert_eq!(&engine.inspect(&here, "{{.Id}}"), old_id, "registry:2's image pulled from pier differs");
    }
    let name = format!("{registry}/team/app:1");
    let id = small_image(&engine, &name);
    push_rmi_pull(&engine, &name, &id);
    if case.auth {
        // What the registry requires, it requires: no credentials, no pull.
        engine.d(&["logout", &registry]);
        engine.d(&["rmi", &name]);
        assert!(!output(&mut engine.docker(&["pull", &name])).status.success(), "pulled without credentials");
        engine.d(&["login", "-u", USER, "-p", PASSWORD, &registry]);
        engine.d(&["pull", &name]);
    }

    let container = compose(&["ps", "-q", "registry"]).trim().to_string();
    assert!(!container.is_empty(), "no registry container");
    engine.d(&["restart", &container]);
    wait_v2(&v2, Duration::from_secs(60));
    pull_again(&engine, &name, &id);

    compose(&["down"]);
    up("after down");
    pull_again(&engine, &name, &id);
    // The data is the user's ./data, handed to the image's user.
    let data = dir.join(case.data);
    assert!(data.join("meta.redb").is_file(), "no store in {}", data.display());
    assert_owned_by(&data, 65532, 65532);
    if case.https {
        let logs = compose(&["logs", "--no-color", "nginx"]);
        assert!(
            logs.contains("/v2/team/app/manifests/1 HTTP/1.1\" 200")
                && logs.contains("\"GET /v2/team/app/blobs/sha256:"),
            "the pulls did not go through nginx:\n{logs}"
        );
    }
    compose(&["down"]);
}

/// Runs Debian's `docker-registry` (registry:2) as root on `data` (created by it), has the engine
/// push a small image to it, stops it; returns the image's name there and its id.
fn registry2_wrote(engine: &Dockerd, data: &Path, work: &Path) -> (String, String) {
    let port = free_port();
    let config = work.join("registry2.yml");
    let text = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        data.display()
    );
    std::fs::write(&config, text).unwrap();
    let log = work.join("registry2.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log_file.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log_file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run docker-registry: {e} (.ci/run installs the docker-registry package)"));
    wait_v2(&format!("http://127.0.0.1:{port}/v2/"), Duration::from_secs(30));
    let name = format!("127.0.0.1:{port}/team/from-registry2:1");
    let id = small_image(engine, &name);
    let pushed = output(&mut engine.docker(&["push", &name]));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let exited = wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten().is_some());
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(pushed.status.success(), "push to docker-registry: {}", String::from_utf8_lossy(&pushed.stderr));
    assert!(data.join("docker/registry/v2/repositories/team/from-registry2").is_dir(), "no registry:2 data");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data).unwrap()), 0);
    (name, id)
}

/// Copies a directory tree of regular files.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Builds `nginx:alpine` in `engine` from the host's nginx: the binary, the shared libraries
/// `ldd` names, `mime.types`, and a `nginx.conf` like the official image's (includes
/// `/etc/nginx/conf.d/*.conf`, logs to the container's stdout and stderr).
fn nginx_image(engine: &Dockerd) {
    let ctx = tmpdir();
    let root = ctx.path().join("rootfs");
    let nginx = "/usr/sbin/nginx";
    let mut files = vec![nginx.to_string(), "/etc/nginx/mime.types".to_string()];
    let ldd = run(Command::new("ldd").arg(nginx));
    for line in ldd.lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            files.push(path.to_string());
        }
    }
    for f in &files {
        let dst = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(f, &dst).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
    for d in ["etc/nginx/conf.d", "var/log/nginx", "var/lib/nginx", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnginx:x:101:\n").unwrap();
    std::fs::write(
        root.join("etc/nginx/nginx.conf"),
        "user nginx;\nworker_processes 1;\nerror_log stderr notice;\npid /run/nginx.pid;\n\
         events { worker_connections 1024; }\n\
         http {\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  access_log /dev/stdout;\n  sendfile on;\n  keepalive_timeout 65;\n  include /etc/nginx/conf.d/*.conf;\n}\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nEXPOSE 80\nSTOPSIGNAL SIGQUIT\nCMD [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]\n",
    )
    .unwrap();
    engine.d(&["build", "-q", "-t", "nginx:alpine", s(ctx.path())]);
}
