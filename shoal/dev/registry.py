"""The dev cluster's image registry: Debian's `docker-registry` (the CNCF distribution registry 2.8) on the
gateway's address, port 5000, its layers under the cluster's root, run as one more supervised process.

Secure clusters serve it over mutual TLS: a server certificate from the node CA for the gateway's address,
and each engine shows its own client certificate from its certs.d (bound over /etc/docker inside that
engine's mount namespace only: the host's /etc/docker is never written). `--insecure` clusters serve it in
plain HTTP and their engines name it with `--insecure-registry`. `up` seeds it with the dev images (the
bytes every node loaded, through the registry's HTTP API), so a pull or a create-time pull finds them there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urljoin

import requests

from shoal.dev import engine, images, tls
from shoal.dev.layout import ClusterLayout
from shoal.dev.node import ProcessSpec
from shoal.errors import HostNotReady, ShoalError

BINARY = "docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def binary() -> str:
    """Where the registry's binary is; a host without it gets the way to install it."""
    found = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else "")
    if not found:
        raise HostNotReady(
            f"{BINARY} not found: the dev cluster's image registry is Debian's package; "
            f"install it with `apt-get install {BINARY}` (or run tools/deps.sh)"
        )
    return found


def config_file(layout: ClusterLayout) -> Path:
    return layout.image_registry_dir / "config.yml"


def data_dir(layout: ClusterLayout) -> Path:
    return layout.image_registry_dir / "data"


def config(layout: ClusterLayout) -> dict:
    """The registry's configuration (pure). JSON is YAML, so it is written as JSON."""
    http: dict = {"addr": layout.image_registry, "headers": {"X-Content-Type-Options": ["nosniff"]}}
    if layout.secure:
        files = tls.image_registry(layout)
        http["tls"] = {
            "certificate": str(files.cert),
            "key": str(files.key),
            # required client certificates: the engines' (node CA) and the operator's (control CA)
            "clientcas": [str(tls.node_ca(layout)), str(tls.control_ca(layout))],
        }
    return {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}, "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(data_dir(layout))},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": http,
        "health": {"storagedriver": {"enabled": False}},
    }


def prepare(layout: ClusterLayout) -> None:
    """Its configuration and data directory (after the cluster's certificates are made)."""
    data_dir(layout).mkdir(parents=True, exist_ok=True)
    config_file(layout).write_text(json.dumps(config(layout), indent=2) + "\n")


def process(layout: ClusterLayout) -> ProcessSpec:
    """The registry as a cluster-wide process (tier 0: the engines pull from it once the manager is up)."""
    ready = f"{layout.image_registry_url}/v2/"
    if not layout.secure:
        return ProcessSpec(
            "image-registry", (binary(), "serve", str(config_file(layout))),
            layout.root / "log" / "image-registry.log", ready_url=ready,
        )  # fmt: skip
    admin = tls.admin(layout)
    return ProcessSpec(
        "image-registry", (binary(), "serve", str(config_file(layout))),
        layout.root / "log" / "image-registry.log", ready_url=ready,
        ready_ca=str(tls.node_ca(layout)), ready_cert=(str(admin.cert), str(admin.key)),
    )  # fmt: skip


def running(layout: ClusterLayout) -> set[int]:
    """The pids of this cluster's registry (its command line names its config file), for a `down` that
    lost its state file; nothing else is matched."""
    want = f"{BINARY} serve {config_file(layout)}"
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = " ".join(a.decode(errors="replace") for a in argv if a)
            if words.endswith(want) and Path(words.split(" ", 1)[0]).name == BINARY:
                found.add(int(proc.name))
    return found


def registry_tags(layout: ClusterLayout, tags: Iterable[str]) -> dict[str, str]:
    """Local tag -> the same image's name in the cluster's registry (`busybox:latest` ->
    `GATEWAY:5000/busybox:latest`), pure."""
    return {t: f"{layout.image_registry}/{t}" for t in sorted(set(tags))}


def manifest(image: images.Built) -> bytes:
    """An OCI image manifest for `image`: its config and its layers uncompressed, as `docker load` had them
    (pure). dockerd's pull detects the (absent) compression itself; the image id is the config's digest."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(image.config)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": _sha(data), "size": len(data)} for data in image.layers
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def seed(layout: ClusterLayout, built: list[images.Built]) -> list[str]:
    """The dev images into the registry through its own HTTP API (the same bytes every node loaded: no
    engine compresses anything, so it takes about a second), and the registry's name for each as one more
    tag on every node, so one image keeps one set of tags everywhere. Blobs already there are not sent
    again. Returns the names seeded."""
    names = registry_tags(layout, [b.repo_tag for b in built])
    with requests.Session() as http:
        http.trust_env = False  # REQUESTS_CA_BUNDLE must not replace the cluster's CA
        if layout.secure:
            admin = tls.admin(layout)
            http.verify, http.cert = str(tls.node_ca(layout)), (str(admin.cert), str(admin.key))
        for b in built:
            repo, _, tag = b.repo_tag.rpartition(":")
            for data in (*b.layers, b.config):
                _put_blob(http, layout, repo, data)
            r = http.put(
                f"{layout.image_registry_url}/v2/{repo}/manifests/{tag}",
                data=manifest(b),
                headers={"Content-Type": OCI_MANIFEST},
                timeout=30,
            )
            _check(r, layout, f"the manifest of {names[b.repo_tag]}")
    for node in layout.nodes:
        c = engine.client(f"unix://{node.engine_socket}", timeout=60.0)
        try:
            for local, remote in names.items():
                repo, _, tag = remote.rpartition(":")
                c.tag(local, repo, tag)
        finally:
            c.close()
    return list(names.values())


def _put_blob(http: requests.Session, layout: ClusterLayout, repo: str, data: bytes) -> None:
    digest, base = _sha(data), f"{layout.image_registry_url}/v2/{repo}/blobs"
    if http.head(f"{base}/{digest}", timeout=30).status_code == 200:
        return
    r = http.post(f"{base}/uploads/", timeout=30)
    _check(r, layout, f"an upload to {repo}")
    upload = urljoin(f"{layout.image_registry_url}/", r.headers["Location"])
    sep = "&" if "?" in upload else "?"
    r = http.put(
        f"{upload}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=120,
    )
    _check(r, layout, f"blob {digest[:19]} of {repo}")


def _check(r: requests.Response, layout: ClusterLayout, what: str) -> None:
    if r.status_code >= 300:
        raise ShoalError(
            f"seeding the cluster's image registry failed at {what}: {r.status_code} {r.text.strip()[:200]} "
            f"(log: {layout.root / 'log' / 'image-registry.log'})"
        )


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
