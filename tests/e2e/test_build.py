"""`docker build` and `docker commit` through the manager: the real docker CLI (classic builder),
docker-compose 1.29 and docker-py, on a node the scheduler chooses (build), the container's node (commit)."""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.e2e
DEBIAN_CLI = "/usr/bin/docker"  # docker.io's CLI 20.10 (/usr/local/bin/docker is 28)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def images(dev_cluster) -> Iterator[list[str]]:
    """Images a test made (append their names), removed from every node at the end."""
    made: list[str] = []
    yield made
    for image in made:
        for node in dev_cluster.nodes:
            dev_cluster.docker(node, "rmi", "-f", image, check=False)


def _holders(dev_cluster, image: str) -> list[str]:
    """The nodes whose own engine lists `image`."""
    return [n for n in dev_cluster.nodes if dev_cluster.docker(n, "images", "-q", image).stdout.strip()]


def _build(dev_cluster, *args: str, buildkit: str | None = "0", **kw) -> subprocess.CompletedProcess[str]:
    """The real `docker build` against the manager; `buildkit=None` is the CLI's own default."""
    env = dev_cluster.client_env()
    env.pop("DOCKER_BUILDKIT", None)
    if buildkit is not None:
        env["DOCKER_BUILDKIT"] = buildkit
    return subprocess.run(
        ["docker", "build", *args], capture_output=True, text=True, timeout=120, env=env, **kw
    )


def _context(tmp_path, dockerfile: str, **files: bytes):
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(dockerfile))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


class _Gate:
    """An HTTP server on the cluster's gateway that answers only once opened: a build step that fetches it
    waits there, so a test sees the steps before it streamed while the build is still running."""

    def __init__(self, host: str) -> None:
        self.open, self.answered = threading.Event(), threading.Event()
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.open.wait(60)
                gate.answered.set()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"go\n")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.host, self.port = host, self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.open.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("buildkit", ["0", None], ids=["DOCKER_BUILDKIT=0", "cli-default"])
def test_build_streams_its_steps_and_the_image_runs_on_its_node(
    dev_cluster, tmp_path, images, gone, buildkit
):
    tag = _name("built")
    images.append(tag)
    gate = _Gate(dev_cluster.gateway)
    ctx = _context(
        tmp_path,
        f"""\
        FROM busybox
        COPY hello.txt /hello.txt
        RUN echo waiting-at-the-gate && printf 'GET / HTTP/1.0\\n\\n' | nc {gate.host} {gate.port} > /gate
        CMD ["cat", "/hello.txt"]
        """,
        **{"hello.txt": b"hello from the build\n"},
    )
    env = dev_cluster.client_env()
    env.pop("DOCKER_BUILDKIT", None)
    if buildkit is not None:
        env["DOCKER_BUILDKIT"] = buildkit
    proc = subprocess.Popen(
        ["docker", "build", "-t", tag, str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the step lines arrive while the build waits at the gate
            seen.append(line)
            if "waiting-at-the-gate" in line and not line.startswith("Step"):
                break
        assert any(line.startswith("Step 1/4 : FROM busybox") for line in seen), seen
        assert not gate.answered.is_set()  # the build still waits: what came so far was streamed
        gate.open.set()
        rest, err = proc.communicate(timeout=120)
    finally:
        gate.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"Successfully tagged {tag}:latest" in rest
    [node] = _holders(dev_cluster, tag)  # on the one node that built it
    ct = _name("fromb")
    gone["containers"].append(ct)
    out = dev_cluster.cli("run", "--name", ct, tag).stdout
    assert out == "hello from the build\n"
    assert dev_cluster.cli("ps", "-a", "--filter", f"name={ct}", "--format", "{{.Names}}").stdout.split() == [
        f"{node}/{ct}"
    ]


def test_debian_cli_builds_with_the_classic_builder(dev_cluster, tmp_path, images):
    tag = _name("old-cli")
    images.append(tag)
    ctx = _context(tmp_path, "FROM busybox\nRUN echo from-20.10 > /o\n")
    env = {**dev_cluster.client_env(), "DOCKER_BUILDKIT": "0"}
    argv = [DEBIAN_CLI, "build", "--build-arg", "constraint:node==node3", "-t", tag, str(ctx)]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Step 2/2 : RUN echo from-20.10 > /o" in p.stdout
    assert _holders(dev_cluster, tag) == ["node3"]


def test_build_arg_constraint_builds_on_that_node_and_is_not_passed_on(dev_cluster, tmp_path, images):
    tag = _name("onnode2")
    images.append(tag)
    ctx = _context(tmp_path, 'FROM busybox\nARG GREETING\nRUN echo "$GREETING" > /greeting\n')
    p = _build(
        dev_cluster,
        "--build-arg",
        "constraint:node==node2",
        "--build-arg",
        "GREETING=hi",
        "-t",
        tag,
        str(ctx),
    )
    assert p.returncode == 0, p.stderr
    assert _holders(dev_cluster, tag) == ["node2"]
    assert "were not consumed" not in p.stdout  # the engine never saw the constraint as a build arg
    assert dev_cluster.cli("run", "--rm", tag, "cat", "/greeting").stdout == "hi\n"


def test_impossible_build_constraint_is_the_schedulers_refusal(dev_cluster, tmp_path, images):
    tag = _name("nowhere")
    images.append(tag)
    ctx = _context(tmp_path, "FROM busybox\nRUN true\n")
    p = _build(dev_cluster, "--build-arg", "constraint:disk==nvme", "-t", tag, str(ctx))
    assert p.returncode != 0
    assert "Unable to find a node that satisfies the following conditions" in p.stderr
    assert "[constraint:disk==nvme]" in p.stderr
    assert "node1 disk=ssd (needs ==nvme)" in p.stderr  # each node and why
    assert _holders(dev_cluster, tag) == []


def test_failing_build_step_is_the_engines_error(dev_cluster, tmp_path, images):
    ctx = _context(tmp_path, "FROM busybox\nRUN echo about to fail && exit 3\n")
    p = _build(dev_cluster, "--force-rm", str(ctx))  # the failed step's container goes too
    assert p.returncode != 0
    assert "about to fail" in p.stdout
    assert "The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3" in p.stderr


def test_buildkit_is_refused_clearly(dev_cluster, tmp_path):
    ctx = _context(tmp_path, "FROM busybox\n")
    p = _build(dev_cluster, str(ctx), buildkit="1")  # this CLI has no buildx: it says so itself
    assert p.returncode != 0 and "BuildKit is enabled but the buildx component is missing" in p.stderr
    r = dev_cluster.http(
        "POST", "/build?version=2", data=b"", headers={"Content-Type": "application/x-tar"}
    )  # a BuildKit client that asks anyway
    assert r.status_code == 400
    assert "DOCKER_BUILDKIT=0" in r.json()["message"]
    env = {**dev_cluster.client_env(), "DOCKER_BUILDKIT": "1"}  # Debian's CLI 20.10 has BuildKit built in
    old = subprocess.run([DEBIAN_CLI, "build", str(ctx)], capture_output=True, text=True, env=env, timeout=60)
    assert old.returncode != 0  # whichever of its two requests fails first: /grpc's 404 or /build's 400
    assert "unable to upgrade to h2c, received 404" in old.stderr or "DOCKER_BUILDKIT=0" in old.stderr
    bad = dev_cluster.http("POST", "/build?buildargs=%7Bnope", data=b"")
    assert bad.status_code == 400 and "error reading build args" in bad.json()["message"]


def test_compose_build_and_up_build(dev_cluster, tmp_path):
    project = _name("cb").replace("-", "")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text(
        'FROM busybox\nRUN echo web-v1 > /version\nCMD ["sh", "-c", "cat /version; exec sleep 300"]\n'
    )
    (tmp_path / "docker-compose.yml").write_text(
        textwrap.dedent(
            """\
            version: "2.4"
            services:
              web:
                build:
                  context: ./web
                  args:
                    - "constraint:node==node3"
            """
        )
    )

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return dev_cluster.compose(tmp_path, project, *args)

    image = f"{project}_web"
    try:
        built = compose("build")
        assert "Step 1/3 : FROM busybox" in built.stdout + built.stderr
        assert _holders(dev_cluster, image) == ["node3"]
        up = compose("up", "-d", "--build")  # built again on node3, from the cache the first build left
        assert "Using cache" in up.stdout + up.stderr
        names = dev_cluster.cli(
            "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}"
        ).stdout.split()
        assert names == [f"node3/{project}_web_1"]  # placed where its image was built
        out = dev_cluster.cli("exec", f"{project}_web_1", "cat", "/version").stdout
        assert out == "web-v1\n"
    finally:
        dev_cluster.compose(tmp_path, project, "down", "--rmi", "all", check=False)
        for node in dev_cluster.nodes:
            dev_cluster.docker(node, "rmi", "-f", image, check=False)


def test_docker_py_builds_from_a_file_object_and_a_path(dev_cluster, tmp_path, images):
    client = dev_cluster.docker_py()
    try:
        tag = _name("pyfile")
        images.append(tag)
        image, logs = client.images.build(
            fileobj=io.BytesIO(b"FROM busybox\nRUN echo from-a-fileobj > /src\n"), tag=tag, rm=True
        )
        assert f"{tag}:latest" in image.tags
        assert any("Step 1/2 : FROM busybox" in (entry.get("stream") or "") for entry in logs)
        assert len(_holders(dev_cluster, tag)) == 1

        tag2 = _name("pypath")
        images.append(tag2)
        ctx = _context(tmp_path, "FROM busybox\nCOPY f /f\n", f=b"from-a-path\n")
        image2, _ = client.images.build(path=str(ctx), tag=tag2, buildargs={"constraint:node": "=node1"})
        assert f"{tag2}:latest" in image2.tags
        assert _holders(dev_cluster, tag2) == ["node1"]
        out = client.containers.run(tag2, ["cat", "/f"], remove=True)
        assert out == b"from-a-path\n"
    finally:
        client.close()


def test_commit_then_run_the_committed_image(dev_cluster, images, gone):
    ct, repo = _name("tocommit"), _name("committed")
    gone["containers"].append(ct)
    images.append(f"{repo}:v1")
    dev_cluster.cli("run", "-d", "--name", ct, "-e", "constraint:node==node3", "busybox", "sh", "-c",
                    "echo made-in-the-container > /made; exec sleep 300")  # fmt: skip
    wait = dev_cluster.cli("exec", ct, "cat", "/made").stdout
    assert wait == "made-in-the-container\n"
    out = dev_cluster.cli("commit", "-c", 'CMD ["cat", "/made"]', f"node3/{ct}", f"{repo}:v1").stdout
    assert out.startswith("sha256:")
    assert _holders(dev_cluster, f"{repo}:v1") == ["node3"]  # on the container's node
    assert dev_cluster.cli("run", "--rm", f"{repo}:v1").stdout == "made-in-the-container\n"
    inspected = json.loads(dev_cluster.cli("image", "inspect", f"{repo}:v1").stdout)[0]
    assert inspected["Config"]["Cmd"] == ["cat", "/made"]
    missing = dev_cluster.cli("commit", _name("no-such"), f"{repo}:v2", check=False)
    assert missing.returncode != 0 and "No such container" in missing.stderr


def test_build_from_an_image_only_one_node_holds_goes_to_that_node(dev_cluster, tmp_path, images):
    # named after a registry port on the gateway where nothing listens: were the build placed elsewhere, the
    # engine's pull would be refused there and then, never leaving the cluster's own addresses
    base, tag = f"{dev_cluster.gateway}:5999/{_name('base')}:1", _name("onbase")
    images += [base, tag]
    dev_cluster.docker("node3", "tag", "busybox", base)  # made on node3 behind the manager's back
    ctx = _context(tmp_path, f"ARG BASE={base}\nFROM $BASE AS first\nFROM first\nRUN echo on-base > /b\n")
    p = _build(dev_cluster, "-t", tag, str(ctx))
    assert p.returncode == 0, p.stderr
    assert _holders(dev_cluster, tag) == ["node3"]  # where its FROM image is: nothing to pull
    assert dev_cluster.cli("run", "--rm", tag, "cat", "/b").stdout == "on-base\n"
    piped = _name("piped")  # `docker build - < Dockerfile`: the CLI sends it as a one-file context
    images.append(piped)
    p = _build(dev_cluster, "-t", piped, "-", input=f"FROM {base}\nRUN echo piped > /p\n")
    assert p.returncode == 0, p.stderr
    assert _holders(dev_cluster, piped) == ["node3"]
