#!/usr/bin/env python3
"""Write an OCI image archive from uncompressed layer tarballs.

The test cluster has no registry: its images (the pause image, the worker
image) are built here and imported with `ctr -n k8s.io images import`. This
writes the OCI image layout (oci-layout, index.json, blobs/sha256/...) as one
tar, which ctr imports under the name given with --name.

    oci-image.py --name localhost/atoll-worker:abc --out img.tar \
        --layer base.tar --layer atoll.tar --entrypoint /usr/local/bin/atoll \
        --env PATH=/usr/local/bin:/usr/bin:/bin --user 65534:65534
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="full image name, e.g. localhost/atoll-worker:tag")
    p.add_argument("--out", required=True)
    p.add_argument("--layer", action="append", required=True, help="uncompressed layer tar, base first")
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    args = p.parse_args()

    layers = [(sha256_file(path), path) for path in args.layer]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": args.entrypoint or None,
            "Env": args.env,
            "User": args.user,
            "Labels": dict(kv.split("=", 1) for kv in args.label),
        },
        "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]},
    }
    config_digest, config_bytes = blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": os.path.getsize(path)}
            for d, path in layers
        ],
    }
    manifest_digest, manifest_bytes = blob(json.dumps(manifest, sort_keys=True).encode())
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    with tarfile.open(args.out, "w") as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add_bytes(tar, "index.json", json.dumps(index).encode())
        add_bytes(tar, "blobs/sha256/" + config_digest[7:], config_bytes)
        add_bytes(tar, "blobs/sha256/" + manifest_digest[7:], manifest_bytes)
        for d, path in layers:
            tar.add(path, arcname="blobs/sha256/" + d[7:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
