"""The local images every dev node needs, built from the host's Debian binaries (nothing can be pulled).

We write `docker save` archives ourselves, byte for byte the same on every run: a layer per image,
fixed mtimes and owners, and the image id being the hash of a fixed config. `docker load` of the
same archive on every node therefore gives the same image id everywhere, which is what the manager
needs to show one image present on three nodes as one image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import HostNotReady

EPOCH = "2015-10-01T00:00:00Z"  # the seed's date; any fixed value keeps ids stable
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "redis:x:999:999:redis:/data:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nredis:x:999:\nnogroup:x:65534:\n"


@dataclass(frozen=True, slots=True)
class Entry:
    """One path in a layer: a directory, a file (bytes) or a symlink."""

    path: str
    kind: str  # "dir" | "file" | "link"
    data: bytes = b""
    target: str = ""
    mode: int = 0o755


@dataclass(frozen=True, slots=True)
class ImageSpec:
    repo_tag: str
    entries: tuple[Entry, ...]
    config: dict = field(default_factory=dict)
    base: ImageSpec | None = None


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """A deterministic tar: sorted paths, mtime 0, owner root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(e.path.lstrip("/"))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _chain(spec: ImageSpec) -> list[ImageSpec]:
    chain: list[ImageSpec] = []
    s: ImageSpec | None = spec
    while s is not None:
        chain.append(s)
        s = s.base
    return chain[::-1]


@dataclass(frozen=True, slots=True)
class Built:
    """One image as bytes: its config (whose sha256 is the image id) and its layers, base first. The same
    bytes go into the `docker save` archive every node loads and into the cluster's image registry, so a
    pull gives the id a load gave."""

    repo_tag: str
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def id(self) -> str:
        return _sha(self.config)


def build(specs: Iterable[ImageSpec]) -> list[Built]:
    """Every image in `specs`, layers shared by content (a base is made once)."""
    layer_cache: dict[int, bytes] = {}
    out = []
    for spec in specs:
        layers = []
        for s in _chain(spec):
            if id(s) not in layer_cache:
                layer_cache[id(s)] = layer_tar(s.entries)
            layers.append(layer_cache[id(s)])
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": EPOCH,
            "config": {"Env": [PATH_ENV], **spec.config},
            "rootfs": {"type": "layers", "diff_ids": [_sha(data) for data in layers]},
            "history": [
                {"created": EPOCH, "created_by": f"shoal dev images: {s.repo_tag}"} for s in _chain(spec)
            ],
        }
        raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        out.append(Built(spec.repo_tag, raw, tuple(layers)))
    return out


def save_archive(specs: Iterable[ImageSpec] | Iterable[Built]) -> bytes:
    """One `docker save`-format archive holding every image, layers shared by content."""
    items = list(specs)
    built = [b for b in items if isinstance(b, Built)] or build(i for i in items if isinstance(i, ImageSpec))
    files: dict[str, bytes] = {}
    manifest = []
    for b in built:
        layer_paths = []
        for data in b.layers:
            path = f"{_sha(data).split(':')[1]}/layer.tar"
            files[path] = data
            layer_paths.append(path)
        image_id = b.id.split(":")[1]
        files[f"{image_id}.json"] = b.config
        manifest.append({"Config": f"{image_id}.json", "RepoTags": [b.repo_tag], "Layers": layer_paths})
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return layer_tar(Entry(p, "file", data=d, mode=0o644) for p, d in files.items())


def image_id(archive: bytes, repo_tag: str) -> str:
    """The id `docker load` will give `repo_tag` from `archive` (for tests and checks)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    for m in manifest:
        if repo_tag in m["RepoTags"]:
            return "sha256:" + m["Config"].removesuffix(".json")
    raise KeyError(repo_tag)


def _binary_with_libs(binary: str, dest: str) -> list[Entry]:
    """The binary at `dest` plus every shared library `ldd` says it loads, at the same paths."""
    src = shutil.which(binary) or binary
    if not os.path.exists(src):
        raise HostNotReady(f"{binary} not found; install it with apt-get (see tools/deps.sh)")
    entries = [Entry(dest, "file", data=Path(src).read_bytes(), mode=0o755)]
    out = subprocess.run(["ldd", src], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        lib = (
            parts[2]
            if "=>" in parts and len(parts) > 2
            else parts[0]
            if parts and parts[0].startswith("/")
            else ""
        )
        if lib.startswith("/"):
            entries.append(Entry(lib, "file", data=Path(lib).read_bytes(), mode=0o755))
    return entries


def _parents(paths: Iterable[str]) -> set[str]:
    dirs = set()
    for p in paths:
        parent = os.path.dirname(p.rstrip("/"))
        while parent not in ("", "/"):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return dirs


def _with_dirs(entries: list[Entry], extra_dirs: dict[str, int]) -> tuple[Entry, ...]:
    have = {e.path for e in entries}
    dirs = {d: 0o755 for d in _parents(have) if d not in extra_dirs}
    dirs.update(extra_dirs)
    return tuple(entries) + tuple(Entry(d, "dir", mode=m) for d, m in dirs.items() if d not in have)


def busybox_spec() -> ImageSpec:
    """busybox:latest from Debian's busybox-static: every applet linked, /etc/passwd, /tmp."""
    src = shutil.which("busybox") or "/bin/busybox"
    entries = _binary_with_libs(src, "/bin/busybox")
    applets = subprocess.run([src, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    entries += [Entry("/" + a, "link", target="/bin/busybox") for a in applets if a != "bin/busybox"]
    entries += [
        Entry("/etc/passwd", "file", data=PASSWD.encode(), mode=0o644),
        Entry("/etc/group", "file", data=GROUP.encode(), mode=0o644),
        Entry("/etc/hosts", "file", data=b"127.0.0.1 localhost\n", mode=0o644),
        Entry("/var/www/index.html", "file", data=b"busybox httpd\n", mode=0o644),
    ]
    dirs = {"/tmp": 0o1777, "/root": 0o700, "/var": 0o755, "/var/www": 0o755, "/home": 0o755, "/data": 0o755}
    return ImageSpec("busybox:latest", _with_dirs(entries, dirs), config={"Cmd": ["sh"]})


def redis_spec(base: ImageSpec) -> ImageSpec:
    """redis:latest from Debian's redis-server, on the busybox layer, shaped like the official image."""
    entries = _binary_with_libs("redis-server", "/usr/local/bin/redis-server")
    if shutil.which("redis-cli"):
        entries += _binary_with_libs("redis-cli", "/usr/local/bin/redis-cli")
    entries = list({e.path: e for e in entries}.values())
    config = {
        "Cmd": ["redis-server", "--protected-mode", "no"],
        "WorkingDir": "/data",
        "ExposedPorts": {"6379/tcp": {}},
        "Volumes": {"/data": {}},
    }
    return ImageSpec("redis:latest", _with_dirs(entries, {"/data": 0o755}), config=config, base=base)


def todolist_spec(base: ImageSpec) -> ImageSpec:
    """todolist:latest, the demo's web application: busybox httpd running a CGI script that keeps the items in
    the redis named by DATABASE_IP/DATABASE_PORT (through Debian's redis-cli)."""
    entries = _binary_with_libs("redis-cli", "/usr/local/bin/redis-cli")
    script = (Path(__file__).parent / "todolist" / "todo.cgi").read_bytes()
    entries += [
        Entry("/www/cgi-bin/todo", "file", data=script, mode=0o755),
        Entry(
            "/www/index.html",
            "file",
            data=b'<meta http-equiv="refresh" content="0; url=/cgi-bin/todo">\n',
            mode=0o644,
        ),
    ]
    entries = list({e.path: e for e in entries}.values())
    config = {
        "Cmd": ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
        "Env": ["DATABASE=redis", "DATABASE_PORT=6379", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"],
        "ExposedPorts": {"8080/tcp": {}},
    }
    return ImageSpec("todolist:latest", _with_dirs(entries, {"/www": 0o755}), config=config, base=base)


def dev_images() -> list[ImageSpec]:
    base = busybox_spec()
    return [base, redis_spec(base), todolist_spec(base)]
