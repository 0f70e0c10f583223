#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

  mkoci.py layout DIR LAYER_FILE TAG   turn LAYER_FILE into a single-layer OCI image
                                       layout at DIR (the file is moved into DIR/blobs);
                                       prints the manifest digest
  mkoci.py sha256 FILE|-               print the hex sha256 of FILE (or stdin)
"""
import hashlib
import json
import os
import sys

CHUNK = 4 << 20


def sha256_stream(f):
    h = hashlib.sha256()
    n = 0
    while True:
        b = f.read(CHUNK)
        if not b:
            break
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


def sha256_file(path):
    if path == "-":
        return sha256_stream(sys.stdin.buffer)
    with open(path, "rb") as f:
        return sha256_stream(f)


def write_blob(blobs, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return "sha256:" + hexd, len(data)


def layout(dirpath, layer, tag):
    blobs = os.path.join(dirpath, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    lhex, lsize = sha256_file(layer)
    os.replace(layer, os.path.join(blobs, lhex))
    ldigest = "sha256:" + lhex
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [ldigest]},
    }
    cdigest, csize = write_blob(blobs, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cdigest,
            "size": csize,
        },
        "layers": [
            {
                # uncompressed: with --preserve-digests skopeo pushes it byte for byte
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": ldigest,
                "size": lsize,
            }
        ],
    }
    mdigest, msize = write_blob(blobs, json.dumps(manifest, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(dirpath, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(dirpath, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(mdigest)


def main(argv):
    if len(argv) == 5 and argv[1] == "layout":
        layout(argv[2], argv[3], argv[4])
    elif len(argv) == 3 and argv[1] == "sha256":
        print(sha256_file(argv[2])[0])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
