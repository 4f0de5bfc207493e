"""Images through the manager and the cluster's image registry (Debian's docker-registry on the gateway):
pull onto every node, push from a node that holds the image, a create that pulls on its node, import onto
one node, with the real docker CLI and docker-py, as a user sees them."""

from __future__ import annotations

import io
import subprocess
import tarfile
import textwrap

import docker
import pytest
import requests

NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def registry(dev_cluster) -> str:
    return dev_cluster.env["SHOAL_IMAGE_REGISTRY"]


@pytest.fixture
def names(dev_cluster):
    """Image names a test made (append them), removed from every node at the end."""
    made: list[str] = []
    yield made
    for ref in made:
        for node in NODES:
            dev_cluster.docker(node, "rmi", ref, check=False)


def holders(dev_cluster, ref: str) -> set[str]:
    """The nodes whose own `docker images` shows `ref`."""
    return {n for n in NODES if dev_cluster.docker(n, "images", "-q", ref).stdout.strip()}


def only_in_registry(dev_cluster, registry: str, name: str, names: list[str]) -> str:
    """`registry/name` pushed from node1 (busybox under a new name), then removed from every node."""
    ref = f"{registry}/{name}"
    names.append(ref)
    dev_cluster.docker("node1", "tag", "busybox", ref)
    dev_cluster.docker("node1", "push", ref)
    for node in NODES:
        dev_cluster.docker(node, "rmi", ref, check=False)
    assert holders(dev_cluster, ref) == set()
    return ref


def test_dev_env_names_the_image_registry_and_up_seeded_it_behind_mutual_tls(dev_cluster, registry):
    assert registry == f"{dev_cluster.gateway}:5000"
    ca = str(dev_cluster.tls / "node-ca.pem")
    admin = (str(dev_cluster.certs / "cert.pem"), str(dev_cluster.certs / "key.pem"))
    catalog = requests.get(f"https://{registry}/v2/_catalog", verify=ca, cert=admin, timeout=10).json()
    assert {"busybox", "redis", "todolist"} <= set(catalog["repositories"])
    with pytest.raises(requests.exceptions.SSLError):  # no client certificate: refused
        requests.get(f"https://{registry}/v2/_catalog", verify=ca, timeout=10)
    # the seeded names are the loaded images themselves, on every node
    for name in ("busybox", "redis", "todolist"):
        assert holders(dev_cluster, f"{registry}/{name}:latest") == set(NODES)


def test_pull_goes_onto_every_node_and_each_progress_line_says_its_node(dev_cluster, registry, names):
    ref = only_in_registry(dev_cluster, registry, "h1-pull:1", names)
    out = dev_cluster.cli("pull", ref).stdout
    for node in NODES:
        assert f"{node}: Status: Downloaded newer image for {ref}" in out
    assert holders(dev_cluster, ref) == set(NODES)
    assert ref in dev_cluster.cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()


def test_docker_py_pull_streams_each_nodes_lines_and_returns_the_image(dev_cluster, registry, names):
    ref = only_in_registry(dev_cluster, registry, "h1-pypull:1", names)
    client = dev_cluster.docker_py()
    repo, tag = ref.rsplit(":", 1)
    lines = list(client.api.pull(repo, tag=tag, stream=True, decode=True))
    said = {line.get("id", line.get("status", "")).split(":", 1)[0] for line in lines}
    assert set(NODES) <= said
    image = client.images.get(ref)
    assert image.id == client.images.get("busybox").id
    assert holders(dev_cluster, ref) == set(NODES)


def test_pull_of_a_name_that_does_not_exist_is_the_registrys_error_once(dev_cluster, registry):
    ref = f"{registry}/h1-no-such-image:1"
    proc = dev_cluster.cli("pull", ref, check=False)
    assert proc.returncode != 0
    assert "manifest unknown" in proc.stderr
    assert proc.stderr.count(f"manifest for {ref} not found") == 1, proc.stderr
    with pytest.raises(docker.errors.NotFound) as err:
        dev_cluster.docker_py().images.pull(f"{registry}/h1-no-such-image", tag="1")
    assert str(err.value.explanation).count("manifest unknown: manifest unknown") == 1
    assert holders(dev_cluster, ref) == set()


def test_push_from_the_node_that_holds_it_then_pull_back_after_rmi(dev_cluster, registry, names):
    ref = f"{registry}/h1-push:1"
    names.append(ref)
    dev_cluster.docker("node2", "tag", "busybox", ref)  # only node2 holds the name
    out = dev_cluster.cli("push", ref).stdout
    assert "1: digest: sha256:" in out
    dev_cluster.cli("rmi", ref)
    assert holders(dev_cluster, ref) == set()
    dev_cluster.cli("pull", ref)
    assert holders(dev_cluster, ref) == set(NODES)
    got = dev_cluster.docker("node3", "image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
    assert got == dev_cluster.docker("node3", "image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip()


def test_push_of_an_image_no_node_holds_is_no_such_image(dev_cluster, registry):
    ref = f"{registry}/h1-nowhere:1"
    proc = dev_cluster.cli("push", ref, check=False)
    assert proc.returncode != 0
    assert f"No such image: {ref}" in proc.stderr


def test_run_of_an_image_only_in_the_registry_pulls_it_first(dev_cluster, registry, names):
    ref = only_in_registry(dev_cluster, registry, "h1-run:1", names)
    out = dev_cluster.cli("run", "--rm", "--network=none", ref, "echo", "ran from the registry").stdout
    assert "ran from the registry" in out


def test_create_through_docker_py_pulls_onto_the_chosen_node_only(dev_cluster, registry, names):
    """docker-py's low-level create does not pull on a 404 as the CLI does: the manager pulls onto the
    node the scheduler chose (classic Swarm's create-time pull)."""
    ref = only_in_registry(dev_cluster, registry, "h1-create:1", names)
    api = dev_cluster.docker_py().api
    created = api.create_container(ref, ["true"], host_config=api.create_host_config(network_mode="none"))
    try:
        node = api.inspect_container(created["Id"])["Node"]["Name"]
        assert holders(dev_cluster, ref) == {node}
    finally:
        api.remove_container(created["Id"], force=True)


def test_create_of_a_name_no_registry_has_says_why(dev_cluster, registry):
    api = dev_cluster.docker_py().api
    with pytest.raises(docker.errors.APIError) as err:
        api.create_container(f"{registry}/h1-never:1", ["true"])
    assert "No such image" in str(err.value.explanation)


def test_compose_up_of_a_project_whose_image_is_only_in_the_registry(dev_cluster, registry, names, tmp_path):
    ref = only_in_registry(dev_cluster, registry, "h1-compose:1", names)
    (tmp_path / "docker-compose.yml").write_text(
        textwrap.dedent(
            f"""\
            version: "2.4"
            services:
              app:
                image: {ref}
                command: ["sleep", "300"]
                network_mode: none
            """
        )
    )

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return dev_cluster.compose(tmp_path, "h1compose", *args, check=False)

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        state = dev_cluster.cli("inspect", "-f", "{{.State.Running}}", "h1compose_app_1").stdout.strip()
        assert state == "true"
    finally:
        compose("down")


def test_pull_of_a_name_docker_refuses_is_the_engines_400_once(dev_cluster):
    r = dev_cluster.http("POST", "/v1.41/images/create", params={"fromImage": "Not/A/Name!", "tag": "1"})
    assert r.status_code == 400
    message = r.json()["message"]
    assert "invalid reference format" in message and message.count("invalid reference format") == 1


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"imported through the manager\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_import_lands_on_one_node_the_scheduler_picks(dev_cluster, names):
    ref = "h1-imported:1"
    names.append(ref)
    proc = subprocess.run(
        ["docker", "import", "--change", "ENV IMPORTED=yes", "-", ref],
        input=_archive(),
        capture_output=True,
        timeout=60,
        env=dev_cluster.client_env(),
    )
    assert proc.returncode == 0, proc.stderr
    image_id = proc.stdout.decode().strip()
    assert image_id.startswith("sha256:")
    assert len(holders(dev_cluster, ref)) == 1
    inspected = dev_cluster.docker_py().images.get(ref)
    assert inspected.id == image_id
    assert "IMPORTED=yes" in inspected.attrs["Config"]["Env"]


def test_import_without_a_source_is_refused_in_dockers_form(dev_cluster):
    r = dev_cluster.http("POST", "/v1.41/images/create")
    assert r.status_code == 400
    assert "fromImage" in r.json()["message"] and "fromSrc" in r.json()["message"]
