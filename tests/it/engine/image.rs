//! pier's image as users run `registry:2`: `docker run -p 5000 -v DIR:/var/lib/registry`, with
//! a data directory that the host owns as root; push and pull with docker, skopeo and podman.
//! And the privilege drop itself, on the host binary, without an engine.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use super::*;

/// The image's unprivileged user (images/Containerfile, `PIER_RUN_AS`).
const RUN_AS: (u32, u32) = (65532, 65532);

/// Goal of issue 11: under 8 MB per architecture.
const IMAGE_SIZE_GOAL: u64 = 8_000_000;

#[test]
fn image_serves_a_root_owned_volume_as_65532_to_docker_skopeo_and_podman() {
    let engine = Dockerd::start();
    let size = pier_image(&engine);
    eprintln!("engine up in {:?}; image {PIER_IMAGE}: {size} bytes", engine.startup);
    assert!(size < IMAGE_SIZE_GOAL, "image is {size} bytes, the goal is under {IMAGE_SIZE_GOAL}");
    let config = engine.inspect(PIER_IMAGE, "{{json .Config}}");
    for want in ["\"5000/tcp\"", "\"/var/lib/registry\"", "PIER_RUN_AS=65532:65532", "\"/pier\""] {
        assert!(config.contains(want), "image config lacks {want}: {config}");
    }

    // The host's data directory: root's, as the engine or a user's `mkdir` makes it, with data.
    let host = tmpdir();
    let data = host.path().join("data");
    std::fs::create_dir_all(data.join("docker/registry/v2")).unwrap();
    std::fs::write(data.join("docker/registry/v2/old-file"), b"from before").unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), 0);

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:5000");
    let volume = format!("{}:/var/lib/registry", data.display());
    engine.d(&["run", "-d", "--name", "registry", "-p", &publish, "-v", &volume, PIER_IMAGE]);
    let first = wait_v2(&format!("http://127.0.0.1:{port}/v2/"), Duration::from_secs(30));
    eprintln!("docker run -> first answered /v2/: {first:?}");

    let pid: u32 = engine.inspect("registry", "{{.State.Pid}}").parse().expect("pid");
    assert_eq!(process_ids(pid), RUN_AS, "pier in the container does not run as 65532:65532");
    assert_owned_by(&data, RUN_AS.0, RUN_AS.1);
    assert!(data.join("meta.redb").is_file(), "no store in the mounted directory");
    let logs = engine.logs("registry");
    assert!(logs.contains("running as 65532:65532"), "{logs}");

    // docker push/pull.
    let host_port = format!("127.0.0.1:{port}");
    let name = format!("{host_port}/engine/hello:1");
    let id = small_image(&engine, &name);
    push_rmi_pull(&engine, &name, &id);

    // skopeo pushes an OCI layout and reads it back byte for byte.
    let img = Image::new("skopeo", "amd64", &[2048, 100], 11);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let oci = format!("oci:{}:v1", src.path().display());
    let dst = format!("docker://{host_port}/engine/skopeo:v1");
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &oci,
        &dst,
    ]));
    let back = tmpdir();
    let back_ref = format!("oci:{}:v1", back.path().display());
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &dst,
        &back_ref,
    ]));
    read_layout(back.path()).assert_has_image("v1", &img);

    // podman pulls what docker pushed, pushes it under another name, docker pulls that.
    let podman_dir = tmpdir();
    let podman = |args: &[&str]| {
        let d = podman_dir.path();
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
        run(&mut c)
    };
    let again = format!("{host_port}/engine/from-podman:1");
    podman(&["pull", "--tls-verify=false", &name]);
    podman(&["tag", &name, &again]);
    podman(&["push", "--tls-verify=false", &again]);
    engine.d(&["pull", &again]);
    assert_eq!(engine.inspect(&again, "{{.Id}}"), id, "podman's push is another image");

    // `docker stop`: SIGTERM, pier drains and exits 0 on its own.
    engine.d(&["stop", "registry"]);
    assert_eq!(engine.inspect("registry", "{{.State.ExitCode}}"), "0", "{}", engine.logs("registry"));
}

/// The privilege drop on the host binary: root-owned data directory (nested, with a symbolic
/// link pointing out of it), `PIER_RUN_AS=65532:65532`; pier hands the tree over, serves as
/// that user, and the next start looks at nothing (the directory's owner is the marker).
#[test]
fn serve_as_root_with_pier_run_as_hands_the_data_directory_over_and_drops_root() {
    let mut p = Pier::new(Options {
        delete_enabled: true,
        env: vec![("PIER_RUN_AS".into(), "65532:65532".into())],
        ..Default::default()
    });
    // The user must be able to reach the data directory inside the test's private directory.
    std::fs::set_permissions(p.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = tmpdir();
    std::fs::write(outside.path().join("not-theirs"), b"x").unwrap();
    std::fs::create_dir_all(p.root.join("a/b/c")).unwrap();
    std::fs::write(p.root.join("a/b/c/file"), b"data").unwrap();
    std::os::unix::fs::symlink(outside.path().join("not-theirs"), p.root.join("a/link")).unwrap();
    p.serve(&[]);
    assert_eq!(process_ids(p.pid()), RUN_AS, "log:\n{}", p.log());
    assert!(p.run_log().contains("running as 65532:65532; 6 entries"), "log:\n{}", p.log());
    assert_owned_by(&p.root, RUN_AS.0, RUN_AS.1);
    let target = std::fs::metadata(outside.path().join("not-theirs")).unwrap();
    assert_eq!(target.uid(), 0, "a symbolic link's target outside the data directory changed owner");
    push_image(&p, "drop/test", "v1", &[b"layer"]);
    p.stop();

    p.serve(&[]);
    assert!(p.run_log().contains("running as 65532:65532; 0 entries"), "log:\n{}", p.log());
    assert_eq!(process_ids(p.pid()), RUN_AS);
    assert_eq!(p.get("/v2/drop/test/tags/list").status, 200);
    p.stop();
}

#[test]
fn serve_refuses_a_pier_run_as_that_is_not_two_nonzero_ids() {
    for bad in ["0:0", "65532", "nobody:nogroup"] {
        let mut p = Pier::new(Options { env: vec![("PIER_RUN_AS".into(), bad.into())], ..Default::default() });
        let log = p.expect_refusal(&format!("PIER_RUN_AS={bad}"));
        assert!(log.contains("PIER_RUN_AS") && log.contains("expected UID:GID"), "{log}");
        assert!(!p.root.exists(), "the data directory was created before the refusal");
    }
}
