#!/usr/bin/env python3
"""Assemble pier's container image as a multi-arch OCI image layout, without an engine.

    images/assemble.py --out DIR --binary linux/amd64=PATH [--binary linux/arm64=PATH ...]
                       [--tag latest] [--version V] [--revision R]

writes DIR as an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) whose
`index.json` names one image index (tagged TAG) with one image per `--binary`, in the order
given. Each image is the one images/Containerfile builds: one gzip layer holding

    /pier                                the static binary (0755)
    /etc/docker/registry/config.yml      images/config.yml (0644)
    /var/lib/registry/                   the data directory, owned 65532:65532, 0755

and a config with the Containerfile's entrypoint, command, environment (PIER_RUN_AS), port,
volume, working directory and labels. Push it with
`skopeo copy --all oci:DIR:TAG docker://REGISTRY/pier:TAG`.

Reproducible: the same inputs give the same bytes, so the same digests. Every tar entry has
mtime SOURCE_DATE_EPOCH (default 0), numeric owners and no owner names, entries in a fixed order;
gzip has no name and mtime 0 and a fixed level; JSON has sorted keys and no spaces; `created` is
SOURCE_DATE_EPOCH. Only the Python standard library is used.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_AS = (65532, 65532)
CONFIG_PATH = "etc/docker/registry/config.yml"
DATA_DIR = "var/lib/registry"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

# Platform -> (GOARCH, variant, the ELF machine the binary must be).
PLATFORMS = {
    "linux/amd64": ("amd64", None, 62),  # EM_X86_64
    "linux/arm64": ("arm64", None, 183),  # EM_AARCH64
    "linux/arm/v7": ("arm", "v7", 40),  # EM_ARM
}


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout being written: blobs by digest."""

    def __init__(self, out):
        self.out = out
        os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

    def blob(self, media_type, data, **extra):
        digest = sha256(data)
        path = os.path.join(self.out, "blobs", "sha256", digest.split(":", 1)[1])
        with open(path, "wb") as f:
            f.write(data)
        return dict({"mediaType": media_type, "digest": digest, "size": len(data)}, **extra)

    def finish(self, index_descriptor):
        with open(os.path.join(self.out, "oci-layout"), "wb") as f:
            f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
        with open(os.path.join(self.out, "index.json"), "wb") as f:
            f.write(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [index_descriptor]}))


def elf_machine(data):
    if data[:4] != b"\x7fELF":
        return None
    order = "little" if data[5] == 1 else "big"
    return int.from_bytes(data[18:20], order)


def layer_tar(binary, config_yml, mtime):
    """The uncompressed layer: a fixed list of entries with fixed metadata."""

    def entry(name, kind, mode, owner=(0, 0), data=b""):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = owner
        info.uname = info.gname = ""
        info.mtime = mtime
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        return info, data

    entries = [
        entry("etc/", tarfile.DIRTYPE, 0o755),
        entry("etc/docker/", tarfile.DIRTYPE, 0o755),
        entry("etc/docker/registry/", tarfile.DIRTYPE, 0o755),
        entry(CONFIG_PATH, tarfile.REGTYPE, 0o644, data=config_yml),
        entry("pier", tarfile.REGTYPE, 0o755, data=binary),
        entry("var/", tarfile.DIRTYPE, 0o755),
        entry("var/lib/", tarfile.DIRTYPE, 0o755),
        entry(DATA_DIR + "/", tarfile.DIRTYPE, 0o755, owner=RUN_AS),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as z:
        z.write(data)
    return buf.getvalue()


def image_config(arch, variant, diff_id, version, revision, created):
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Entrypoint": ["/pier"],
            "Cmd": ["serve", "--config", "/" + CONFIG_PATH],
            "Env": ["PIER_RUN_AS=%d:%d" % RUN_AS],
            "ExposedPorts": {"5000/tcp": {}},
            "Volumes": {"/" + DATA_DIR: {}},
            "WorkingDir": "/" + DATA_DIR,
            "Labels": {
                "org.opencontainers.image.title": "pier",
                "org.opencontainers.image.description": "A lean OCI container image registry (OCI Distribution API)",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.revision": revision,
                "org.opencontainers.image.licenses": "Apache-2.0",
                "org.opencontainers.image.base.name": "scratch",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "images/assemble.py"}],
    }
    if variant:
        config["variant"] = variant
    return config


def cargo_version():
    with open(os.path.join(HERE, "..", "Cargo.toml"), encoding="utf-8") as f:
        m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
    return m.group(1) if m else "unknown"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the OCI image layout directory to write (must not exist)")
    p.add_argument("--binary", action="append", required=True, metavar="PLATFORM=PATH",
                   help="a static pier binary for one of: " + ", ".join(PLATFORMS))
    p.add_argument("--config", default=os.path.join(HERE, "config.yml"), help="default: images/config.yml")
    p.add_argument("--tag", default="latest")
    p.add_argument("--version", default=None, help="default: Cargo.toml's")
    p.add_argument("--revision", default="unknown")
    args = p.parse_args(argv)

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = args.version or cargo_version()
    with open(args.config, "rb") as f:
        config_yml = f.read()
    if os.path.exists(args.out):
        p.error("%s exists" % args.out)
    binaries = []
    for spec in args.binary:
        platform, sep, path = spec.partition("=")
        if not sep or platform not in PLATFORMS or platform in (b[0] for b in binaries):
            p.error("--binary %r: expected PLATFORM=PATH, PLATFORM one of %s, each once" % (spec, ", ".join(PLATFORMS)))
        with open(path, "rb") as f:
            binary = f.read()
        if elf_machine(binary) != PLATFORMS[platform][2]:
            p.error("%s is not an ELF binary for %s" % (path, platform))
        binaries.append((platform, binary))

    layout = Layout(args.out)
    manifests = []
    for platform, binary in binaries:
        arch, variant, _ = PLATFORMS[platform]
        tar = layer_tar(binary, config_yml, epoch)
        layer = layout.blob(OCI_LAYER_GZIP, gzip_bytes(tar))
        config = layout.blob(OCI_CONFIG, canonical_json(image_config(arch, variant, sha256(tar), version, args.revision, created)))
        manifest = layout.blob(OCI_MANIFEST, canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [layer],
        }))
        plat = {"architecture": arch, "os": "linux"}
        if variant:
            plat["variant"] = variant
        manifest["platform"] = plat
        manifests.append(manifest)
        print("%-13s layer %8d bytes gzip (%d tar), manifest %s" % (platform, layer["size"], len(tar), manifest["digest"]))

    index = layout.blob(OCI_INDEX, canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
                        annotations={"org.opencontainers.image.ref.name": args.tag})
    layout.finish(index)
    print("index %s tagged %s in %s" % (index["digest"], args.tag, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
