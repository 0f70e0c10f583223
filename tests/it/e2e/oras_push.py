#!/usr/bin/env python3
"""Drives the ORAS Python SDK (`pip install oras`) against a registry for tests/it/e2e/oras.rs.

Every subcommand prints one JSON object on stdout and exits non-zero on any failure.

  push HOST REF FILE
      oras push of one file (high-level OrasClient.push).
  push-chunked HOST REF FILE CHUNK_SIZE
      oras push of one file with the SDK's chunked upload (POST, PATCH per chunk, PUT).
  push-subject HOST REF FILE CONFIG_MEDIA_TYPE SUBJECT_DIGEST SUBJECT_SIZE SUBJECT_MEDIA_TYPE
      oras push of one file whose manifest has `subject` (OrasClient.push(subject=...)); the
      config media type doubles as the artifact type.
  push-referrer HOST REF FILE ARTIFACT_TYPE SUBJECT_DIGEST SUBJECT_SIZE SUBJECT_MEDIA_TYPE
      blobs uploaded with OrasClient.upload_blob (the file and an empty `{}` config), then an
      artifact manifest with `artifactType` and `subject` uploaded with upload_manifest.
  pull HOST REF OUTDIR
      oras pull; prints the files written.

REF is `repo:tag` or `repo@digest`.
"""

import hashlib
import json
import os
import sys

import oras.client
import oras.defaults
import oras.oci


def client(host):
    return oras.client.OrasClient(hostname=host, insecure=True)


def response_info(resp):
    return {
        "status": resp.status_code,
        "digest": resp.headers.get("Docker-Content-Digest"),
        "oci_subject": resp.headers.get("OCI-Subject"),
        "location": resp.headers.get("Location"),
    }


def check(resp, what):
    if resp.status_code not in (200, 201, 202):
        raise SystemExit(f"{what}: HTTP {resp.status_code}: {resp.text}")


def cmd_push(host, ref, path):
    c = client(host)
    resp = c.push(target=f"{host}/{ref}", files=[path], disable_path_validation=True,
                  manifest_annotations={"org.opencontainers.image.description": "pier e2e artifact"})
    check(resp, "push")
    return response_info(resp)


def cmd_push_chunked(host, ref, path, chunk_size):
    c = client(host)
    resp = c.push(target=f"{host}/{ref}", files=[path], disable_path_validation=True,
                  do_chunked=True, chunk_size=int(chunk_size))
    check(resp, "chunked push")
    return response_info(resp)


def cmd_push_subject(host, ref, path, config_media_type, s_digest, s_size, s_media_type):
    c = client(host)
    subject = oras.oci.Subject(mediaType=s_media_type, digest=s_digest, size=int(s_size))
    resp = c.push(target=f"{host}/{ref}", files=[path], disable_path_validation=True,
                  manifest_config=f":{config_media_type}", subject=subject)
    check(resp, "push with subject")
    return response_info(resp)


def cmd_push_referrer(host, ref, path, artifact_type, s_digest, s_size, s_media_type):
    c = client(host)
    container = c.get_container(f"{host}/{ref}")
    with open(path, "rb") as f:
        data = f.read()
    layer = {
        "mediaType": "application/vnd.example.sbom.v1+json",
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "annotations": {oras.defaults.annotation_title: os.path.basename(path)},
    }
    check(c.upload_blob(path, container, layer), "upload_blob layer")
    empty = os.path.join(os.path.dirname(os.path.abspath(path)), "empty-config.json")
    with open(empty, "wb") as f:
        f.write(b"{}")
    config = {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
        "size": 2,
    }
    check(c.upload_blob(empty, container, config), "upload_blob config")
    manifest = {
        "schemaVersion": 2,
        "mediaType": oras.defaults.default_manifest_media_type,
        "artifactType": artifact_type,
        "config": config,
        "layers": [layer],
        "subject": {"mediaType": s_media_type, "digest": s_digest, "size": int(s_size)},
        "annotations": {"org.example.sbom.format": "spdx"},
    }
    resp = c.upload_manifest(manifest, container)
    check(resp, "upload_manifest")
    info = response_info(resp)
    # requests serialises `json=` with json.dumps defaults; report what was sent.
    info["sent_digest"] = "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    return info


def cmd_pull(host, ref, outdir):
    c = client(host)
    files = c.pull(target=f"{host}/{ref}", outdir=outdir)
    return {"files": [os.path.abspath(f) for f in files]}


def main(argv):
    cmds = {
        "push": (cmd_push, 3),
        "push-chunked": (cmd_push_chunked, 4),
        "push-subject": (cmd_push_subject, 7),
        "push-referrer": (cmd_push_referrer, 7),
        "pull": (cmd_pull, 3),
    }
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        raise SystemExit(__doc__)
    fn, _ = cmds[argv[1]]
    print(json.dumps(fn(*argv[2:])))


if __name__ == "__main__":
    main(sys.argv)
