//! The engine-free image (`images/assemble.py`): linux/amd64, linux/arm64 and linux/arm/v7 in one
//! OCI index from the static binaries, reproducible, pushed into a running pier with skopeo,
//! then pulled and run by the engine from there; the running image takes its own index too
//! (pier hosts its own image). The arm images are pulled back per platform and their binary run
//! under qemu-user (the engine here has no binfmt emulation).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;

/// The static binaries per platform. arm/v7 is glibc linked statically (`crt-static`, see
/// .cargo/config.toml): rustup offers no armv7 musl standard library on these machines.
const PLATFORMS: [(&str, &str); 3] = [
    ("linux/amd64", AMD64_MUSL),
    ("linux/arm64", "aarch64-unknown-linux-musl"),
    ("linux/arm/v7", "armv7-unknown-linux-gnueabihf"),
];

fn assemble(out: &Path) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("images/assemble.py")).arg("--out").arg(out).args(["--tag", "latest"]);
    for (platform, target) in PLATFORMS {
        cmd.arg("--binary").arg(format!("{platform}={}", image_binary(target).display()));
    }
    run(&mut cmd)
}

/// Every file of an OCI layout, by relative path.
fn layout_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// (name, mode, uid, gid, type flag, size) of each entry of a ustar archive.
fn tar_entries(tar: &[u8]) -> Vec<(String, u32, u32, u32, u8, usize)> {
    let octal = |f: &[u8]| {
        let t = String::from_utf8_lossy(f);
        u64::from_str_radix(t.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
    };
    let mut entries = Vec::new();
    let mut off = 0;
    while off + 512 <= tar.len() && tar[off] != 0 {
        let h = &tar[off..off + 512];
        let name = String::from_utf8_lossy(&h[..100]).trim_end_matches('\0').to_string();
        let size = octal(&h[124..136]) as usize;
        entries.push((
            name,
            octal(&h[100..108]) as u32,
            octal(&h[108..116]) as u32,
            octal(&h[116..124]) as u32,
            h[156],
            size,
        ));
        off += 512 + size.div_ceil(512) * 512;
    }
    entries
}

#[test]
fn assembled_multi_arch_index_is_reproducible_and_pier_hosts_and_runs_its_own_image() {
    let work = tmpdir();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let report = assemble(&a);
    eprintln!("{report}");
    assemble(&b);
    let (files_a, files_b) = (layout_files(&a), layout_files(&b));
    assert_eq!(
        files_a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        files_b.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "two assemblies wrote different blobs"
    );
    assert!(files_a == files_b, "two assemblies of the same inputs differ");

    // The index: three platforms; each image one layer, with the data directory 65532's.
    let layout = read_layout(&a);
    let (_, index) = layout.tagged("latest");
    let index_digest = sha256_digest(&index);
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let v = p["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default();
            format!("{}/{}{v}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap())
        })
        .collect();
    assert_eq!(platforms, PLATFORMS.map(|p| p.0.to_string()));
    for m in index["manifests"].as_array().unwrap() {
        let manifest: serde_json::Value = serde_json::from_slice(layout.blob(m["digest"].as_str().unwrap())).unwrap();
        let layer = layout.blob(manifest["layers"][0]["digest"].as_str().unwrap());
        let entries = tar_entries(&gunzip(layer));
        let data_dir =
            entries.iter().find(|e| e.0.trim_end_matches('/') == "var/lib/registry").expect("data dir entry");
        assert_eq!((data_dir.1, data_dir.2, data_dir.3, data_dir.4), (0o755, 65532, 65532, b'5'), "{data_dir:?}");
        let bin = entries.iter().find(|e| e.0 == "pier").expect("pier entry");
        assert_eq!((bin.1, bin.2), (0o755, 0));
        eprintln!("{}: layer {} bytes compressed, binary {} bytes", m["platform"], layer.len(), bin.5);
        assert!(layer.len() < 8_000_000, "compressed image over 8 MB: {}", layer.len());
    }

    // Into a running pier, then pulled and run by the engine from there.
    let host_pier = Pier::start();
    let oci = format!("oci:{}:latest", a.display());
    let dst = format!("docker://{}/pier/pier:latest", host_pier.host());
    run_logged(
        &host_pier,
        Command::new("skopeo").args(["--insecure-policy", "copy", "--all", "--dest-tls-verify=false", &oci, &dst]),
    );
    let served = get_manifest(&host_pier, "pier/pier", "latest");
    assert_eq!(served.status, 200);
    assert_eq!(sha256_digest(&served.body), index_digest, "pier serves another index");

    let engine = Dockerd::start();
    let from_host = format!("{}/pier/pier:latest", host_pier.host());
    engine.d(&["pull", &from_host]);
    let id = engine.inspect(&from_host, "{{.Id}}");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:5000");
    engine.d(&["run", "-d", "--name", "self", "-p", &publish, &from_host]);
    wait_v2(&format!("http://127.0.0.1:{port}/v2/"), Duration::from_secs(30));
    let pid: u32 = engine.inspect("self", "{{.State.Pid}}").parse().unwrap();
    assert_eq!(process_ids(pid), (65532, 65532));
    // The image's own registry takes the whole index and serves the engine its own image.
    let own = format!("127.0.0.1:{port}/pier:latest");
    let own_dst = format!("docker://{own}");
    run(Command::new("skopeo").args(["--insecure-policy", "copy", "--all", "--dest-tls-verify=false", &oci, &own_dst]));
    engine.d(&["pull", &own]);
    assert_eq!(engine.inspect(&own, "{{.Id}}"), id);
    engine.d(&["stop", "self"]);
    assert_eq!(engine.inspect("self", "{{.State.ExitCode}}"), "0");

    // The arm images, pulled per platform from pier, run under qemu-user.
    for (arch, variant, qemu) in [("arm64", None, "qemu-aarch64"), ("arm", Some("v7"), "qemu-arm")] {
        let dir = tmpdir();
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "--override-arch", arch]);
        if let Some(v) = variant {
            cmd.args(["--override-variant", v]);
        }
        let to = format!("oci:{}:x", dir.path().display());
        run(cmd.args(["copy", "--src-tls-verify=false", &dst, &to]));
        let pulled = read_layout(dir.path());
        let (_, manifest) = pulled.tagged("x");
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let tar = gunzip(pulled.blob(manifest["layers"][0]["digest"].as_str().unwrap()));
        let files = tar_files(&tar);
        let bin = dir.path().join("pier");
        std::fs::write(&bin, &files["pier"]).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let version = run(Command::new(qemu).arg(&bin).arg("--version"));
        assert!(version.starts_with("pier "), "{arch}: {version}");
    }
}
