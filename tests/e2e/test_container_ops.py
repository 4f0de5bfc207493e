"""prune (containers, images, build cache, system), `docker rm -l`, export, update, wait, rename, node/name
references and the websocket attach through the manager, as the docker CLI 28 and docker-py see them against
one engine (issue 14, line 3)."""

from __future__ import annotations

import asyncio
import io
import json
import ssl
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import docker
import pytest

from shoal.manager.container_ops import human_size

pytestmark = pytest.mark.e2e


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _ps_all(dev_cluster, node: str | None = None, *args: str) -> list[str]:
    """`docker ps -a` names and ids, through the manager or straight from one node."""
    fmt = ["--no-trunc", "--format", "{{.ID}} {{.Names}}"]
    if node is None:
        return dev_cluster.cli("ps", "-a", *fmt, *args).stdout.split()
    return dev_cluster.docker(node, "ps", "-a", *fmt, *args).stdout.split()


def _stopped(dev_cluster, gone, node: str, label: str, written: Path | None = None) -> str:
    """A container made on `node` and not running (created only: `docker run` is seconds slower), with the
    file `written` copied into it; its full id."""
    ct = _name(f"stopped-{node}")
    gone["containers"].append(ct)
    made = dev_cluster.cli("create", "--name", ct, "-l", label, "-e", f"constraint:node=={node}", "busybox")
    if written is not None:
        dev_cluster.cli("cp", str(written), f"{ct}:/written")
    return made.stdout.strip()


def test_container_prune_removes_stopped_containers_on_every_node_and_sums_the_space(
    dev_cluster, gone, tmp_path
):
    label = f"prune={uuid.uuid4().hex[:8]}"
    (tmp_path / "f").write_bytes(bytes(100_000))
    ids = [_stopped(dev_cluster, gone, n, label, tmp_path / "f") for n in ("node2", "node3")]
    other = _stopped(dev_cluster, gone, "node2", f"{label}-not")  # the filter leaves it
    sizes = dev_cluster.docker_py().api.containers(all=True, size=True, filters={"label": label})
    space = sum(c.get("SizeRw") or 0 for c in sizes if c["Id"] in ids)
    assert space >= 200_000

    out = dev_cluster.cli("container", "prune", "-f", "--filter", f"label={label}").stdout
    deleted = out.split("Deleted Containers:")[1].split("Total reclaimed space:")[0].split()
    assert sorted(deleted) == sorted(ids)
    assert f"Total reclaimed space: {human_size(space)}" in out
    for node, cid in zip(("node2", "node3"), ids, strict=True):
        assert cid not in _ps_all(dev_cluster, node)  # gone from the node itself
        assert cid not in _ps_all(dev_cluster)  # and from the manager's list at once
    assert other in _ps_all(dev_cluster, "node2") and other in _ps_all(dev_cluster)


def test_prune_with_a_bad_filter_is_the_engines_400(dev_cluster):
    for what in ("container", "image"):
        bad = dev_cluster.cli(what, "prune", "-f", "--filter", "bogus=1", check=False)
        assert (
            bad.returncode != 0 and bad.stderr.strip() == "Error response from daemon: Invalid filter 'bogus'"
        )
    when = dev_cluster.cli("container", "prune", "-f", "--filter", "until=soon", check=False)
    assert 'failed to parse value as time or duration: "soon"' in when.stderr
    with pytest.raises(docker.errors.APIError) as e:
        dev_cluster.docker_py().api.prune_containers(filters={"bogus": "1"})
    assert e.value.status_code == 400 and "Invalid filter 'bogus'" in str(e.value)
    broken = dev_cluster.http("POST", "/v1.41/containers/prune", params={"filters": "{not json"})
    assert broken.status_code == 400 and "message" in broken.json()


def test_image_prune_deletes_dangling_images_on_every_node(dev_cluster, gone):
    label = f"imgprune={uuid.uuid4().hex[:8]}"
    made = {}
    for node in ("node2", "node3"):  # an untagged commit on each node: a dangling image there only
        ct = _name("tocommit")
        dev_cluster.docker(node, "create", "--name", ct, "busybox", "true")
        made[node] = dev_cluster.docker(node, "commit", "--change", f"LABEL {label}", ct).stdout.strip()
        dev_cluster.docker(node, "rm", ct)
    listed = dev_cluster.cli("images", "-a", "-q", "--no-trunc", "--filter", f"label={label}").stdout.split()
    assert sorted(listed) == sorted(made.values())

    out = dev_cluster.cli("image", "prune", "-f", "--filter", f"label={label}").stdout
    assert sorted(line.split()[-1] for line in out.splitlines() if line.startswith("deleted:")) == sorted(
        made.values()
    )
    assert "Total reclaimed space:" in out
    for node in made:
        assert dev_cluster.docker(node, "images", "-a", "-q", "--filter", f"label={label}").stdout == ""
    assert dev_cluster.cli("images", "-a", "-q", "--filter", f"label={label}").stdout == ""


def test_system_prune_and_builder_prune_run_on_every_node(dev_cluster, gone):
    label = f"sysprune={uuid.uuid4().hex[:8]}"
    ids = [_stopped(dev_cluster, gone, n, label) for n in ("node2", "node3")]
    out = dev_cluster.cli("system", "prune", "-f", "--filter", f"label={label}").stdout
    assert all(cid in out for cid in ids) and "Total reclaimed space:" in out
    for node, cid in zip(("node2", "node3"), ids, strict=True):
        assert cid not in _ps_all(dev_cluster, node)
    built = dev_cluster.docker_py().api.prune_builds()
    assert built == {"CachesDeleted": None, "SpaceReclaimed": 0}  # nothing cached: the classic builder's
    assert "Total reclaimed space: 0B" in dev_cluster.cli("builder", "prune", "-f").stdout


def test_rm_link_removes_the_link_on_the_parents_node(dev_cluster, gone):
    db, web = _name("db"), _name("web")
    gone["containers"] += [web, db]
    for ct, extra in ((db, []), (web, ["--link", f"{db}:store"])):
        dev_cluster.cli("create", "--name", ct, "-e", "constraint:node==node3", *extra, "busybox")
    assert f"node3/{web}/store" in " ".join(_ps_all(dev_cluster))

    out = dev_cluster.cli("rm", "-l", f"/{web}/store")
    assert out.stdout.strip() == f"/{web}/store"
    assert dev_cluster.docker("node3", "inspect", "-f", "{{.HostConfig.Links}}", web).stdout.strip() == "[]"
    assert f"{web}/store" not in " ".join(_ps_all(dev_cluster))  # the cache learned it
    assert dev_cluster.cli("inspect", "-f", "{{.Name}}", db).stdout.strip() == f"/{db}"  # db stays

    again = dev_cluster.cli("rm", "-l", f"/{web}/store", check=False)
    assert again.returncode != 0 and f"No such container: {web}/store" in again.stderr
    nobody = dev_cluster.cli("rm", "-l", "/no-such-parent/store", check=False)
    assert nobody.returncode != 0 and "No such container: no-such-parent/store" in nobody.stderr
    own = dev_cluster.cli("rm", "-l", web, check=False)
    assert (
        own.returncode != 0 and "Conflict, cannot remove the default link name of the container" in own.stderr
    )


def test_rm_link_from_docker_py_and_the_debian_docker_cli(dev_cluster, gone):
    db, web = _name("db"), _name("web")
    gone["containers"] += [web, db]
    api = dev_cluster.docker_py().api
    api.create_container("busybox", name=db, environment=["constraint:node==node2"])
    for alias, ref in (("one", f"/{web}/one"), ("two", f"{web}/two")):  # docker-py sends both as given
        if alias == "two":
            api.remove_container(web)
        links = api.create_host_config(links={db: alias})
        api.create_container("busybox", name=web, host_config=links, environment=["constraint:node==node2"])
        api.remove_container(ref, link=True)
        assert (
            dev_cluster.docker("node2", "inspect", "-f", "{{.HostConfig.Links}}", web).stdout.strip() == "[]"
        )
    # Debian's docker CLI 20.10 (API 1.41 too), as `shoal dev env` leaves the environment
    dev_cluster.cli("rm", web)
    dev_cluster.cli(
        "create", "--name", web, "--link", f"{db}:three", "-e", "constraint:node==node2", "busybox"
    )

    def debian_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/usr/bin/docker", *args],
            capture_output=True,
            text=True,
            env=dev_cluster.client_env(),
            timeout=60,
        )

    old = debian_cli("rm", "-l", f"/{web}/three")
    assert old.returncode == 0 and old.stdout.strip() == f"/{web}/three", old.stderr
    assert f"{web}/three" not in " ".join(_ps_all(dev_cluster))
    pruned = debian_cli("container", "prune", "-f", "--filter", "bogus=1")
    assert pruned.returncode != 0 and "Invalid filter 'bogus'" in pruned.stderr


def test_containers_named_node_slash_name(dev_cluster, gone):
    ct = _name("named")
    gone["containers"].append(ct)
    dev_cluster.cli("create", "--name", ct, "-e", "constraint:node==node2", "busybox")
    assert dev_cluster.cli("inspect", "-f", "{{.Node.Name}}", f"node2/{ct}").stdout.strip() == "node2"
    dev_cluster.cli("stop", "-t", "0", f"node2/{ct}")
    dev_cluster.cli("rm", f"node2/{ct}")
    assert f"/{ct}" not in " ".join(_ps_all(dev_cluster, "node2"))
    wrong = dev_cluster.cli("rm", f"node1/{ct}", check=False)
    assert wrong.returncode != 0 and f"No such container: {ct}" in wrong.stderr


def test_export_streams_the_containers_filesystem_from_its_node(dev_cluster, gone, tmp_path):
    ct = _name("export")
    gone["containers"].append(ct)
    dev_cluster.cli("create", "--name", ct, "-e", "constraint:node==node3", "busybox")
    (tmp_path / "marker").write_text("exported\n")
    dev_cluster.cli("cp", str(tmp_path / "marker"), f"{ct}:/marker")
    dev_cluster.cli("export", "-o", str(tmp_path / "x.tar"), ct)
    with tarfile.open(tmp_path / "x.tar") as tar:
        marker = tar.extractfile("marker")
        assert marker is not None and marker.read() == b"exported\n"
        names = sorted(tar.getnames())
    direct = dev_cluster.docker_py(dev_cluster.nodes["node3"]).api.export(ct)
    with tarfile.open(fileobj=io.BytesIO(b"".join(direct))) as tar:
        assert sorted(tar.getnames()) == names  # as from the node itself
    missing = dev_cluster.cli("export", "-o", str(tmp_path / "y.tar"), "no-such-container", check=False)
    assert missing.returncode != 0 and "No such container: no-such-container" in missing.stderr


def test_update_changes_the_container_on_its_node(dev_cluster, gone):
    ct = _name("update")
    gone["containers"].append(ct)
    dev_cluster.cli("create", "--name", ct, "-e", "constraint:node==node2", "busybox", "sleep", "300")
    assert (
        dev_cluster.cli(
            "update", "--memory", "64m", "--memory-swap", "128m", "--restart", "always", ct
        ).stdout.strip()
        == ct
    )
    on_node = json.loads(dev_cluster.docker("node2", "inspect", "-f", "{{json .HostConfig}}", ct).stdout)
    assert on_node["Memory"] == 64 << 20 and on_node["MemorySwap"] == 128 << 20
    assert on_node["RestartPolicy"]["Name"] == "always"
    tiny = dev_cluster.cli("update", "--memory", "1k", ct, check=False)
    assert tiny.returncode != 0 and "Minimum memory limit allowed is 6MB" in tiny.stderr


def test_wait_and_wait_conditions(dev_cluster, gone):
    ct = _name("wait")
    gone["containers"].append(ct)
    dev_cluster.cli("run", "-d", "--name", ct, "-e", "constraint:node==node3", "busybox", "sh", "-c",
                    'trap "exit 3" TERM; sleep 300 & wait')  # fmt: skip
    api = dev_cluster.docker_py().api
    got: dict[str, object] = {}

    def wait(condition: str) -> None:
        if condition == "cli":
            got[condition] = dev_cluster.cli("wait", ct).stdout.strip()
        else:
            got[condition] = api.wait(ct, condition=condition, timeout=30)["StatusCode"]

    waiters = {c: threading.Thread(target=wait, args=(c,)) for c in ("cli", "next-exit", "removed")}
    for t in waiters.values():
        t.start()
    time.sleep(0.5)  # sequencing, not an assertion: the waits reach the engine before the stop
    dev_cluster.cli("stop", ct)
    for c in ("cli", "next-exit"):
        waiters[c].join(30)
    assert got.get("cli") == "3" and got.get("next-exit") == 3
    assert "removed" not in got  # still there: `removed` waits on
    dev_cluster.cli("rm", ct)
    waiters["removed"].join(30)
    assert got.get("removed") == 3
    with pytest.raises(docker.errors.NotFound):
        api.wait("no-such-container", condition="not-running", timeout=10)


def test_rename_is_seen_by_the_manager_at_once(dev_cluster, gone):
    old, new, other = _name("before"), _name("after"), _name("other")
    gone["containers"] += [old, new, other]
    for ct in (old, other):
        dev_cluster.cli("create", "--name", ct, "-e", "constraint:node==node1", "busybox")
    dev_cluster.cli("rename", old, new)
    names = " ".join(_ps_all(dev_cluster))
    assert f"node1/{new}" in names and f"/{old} " not in f"{names} "
    assert dev_cluster.cli("inspect", "-f", "{{.Name}}", new).stdout.strip() == f"/{new}"
    assert new in dev_cluster.docker("node1", "ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert dev_cluster.cli("inspect", old, check=False).returncode != 0
    taken = dev_cluster.cli("rename", new, other, check=False)
    assert taken.returncode != 0 and "is already in use" in taken.stderr
    bad = dev_cluster.cli("rename", new, "not a name!", check=False)
    assert bad.returncode != 0 and "Invalid container name" in bad.stderr


def _ws_attach(dev_cluster, url: str, send: str, until: bytes) -> bytes:
    """A websocket client on docker-py's own attach URL (docker-py's `attach_socket(ws=True)` goes through
    websocket-client, which takes no client certificate: aiohttp's client holds the admin one). What the
    container wrote, read until it ends with `until`."""
    certs = dev_cluster.certs
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))

    async def talk() -> bytes:
        async with aiohttp.ClientSession() as s, s.ws_connect(url, ssl=ctx, origin="http://localhost") as ws:
            await ws.send_str(send)
            got = b""
            while not got.endswith(until):
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
                got += msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            return got

    return asyncio.run(talk())


def test_websocket_attach_reaches_the_container_on_its_node(dev_cluster, gone):
    ct = _name("ws")
    gone["containers"].append(ct)
    dev_cluster.cli("run", "-d", "-i", "--name", ct, "-e", "constraint:node==node3", "busybox", "sh", "-c",
                    'echo ready; while read l; do echo "got $l"; done')  # fmt: skip
    api = dev_cluster.docker_py().api
    params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "logs": 1}
    url = api._url("/containers/{0}/attach/ws", ct).replace("https://", "wss://", 1)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    assert _ws_attach(dev_cluster, f"{url}?{query}", "ping\n", b"got ping\n") == b"ready\ngot ping\n"
    node_url = f"{dev_cluster.nodes['node3'].replace('tcp://', 'wss://')}/v1.41/containers/{ct}/attach/ws"
    direct = _ws_attach(dev_cluster, f"{node_url}?{query}", "pong\n", b"got pong\n")
    assert direct == b"ready\ngot ping\ngot pong\n"  # the engine itself saw what the manager relayed

    missing = dev_cluster.http("GET", "/v1.41/containers/no-such-container/attach/ws")
    assert missing.status_code == 404 and "No such container: no-such-container" in missing.json()["message"]


def test_a_prune_a_node_could_not_do_says_so_and_what_was_done(dev_cluster, gone):
    label = f"partial={uuid.uuid4().hex[:8]}"
    ids = [_stopped(dev_cluster, gone, n, label) for n in ("node2", "node3")]
    # node3's engine refuses every connection (a reset, at once) for the length of the prune: inside the
    # node's own network namespace, so nothing else on the host sees it
    rule = ["INPUT", "-p", "tcp", "--dport", "2376", "-j", "REJECT", "--reject-with", "tcp-reset"]
    iptables = ["ip", "netns", "exec", f"{dev_cluster.name}-node3", "iptables"]
    subprocess.run([*iptables, "-I", *rule], check=True, timeout=30)
    try:
        out = dev_cluster.cli("container", "prune", "-f", "--filter", f"label={label}", check=False)
    finally:
        subprocess.run([*iptables, "-D", *rule], check=True, timeout=30)
    assert out.returncode != 0
    assert "container prune done on node1, node2 (1 deleted, 0B reclaimed) but not on node3" in out.stderr
    assert "run it again once node3 answers" in out.stderr
    assert ids[0] not in _ps_all(dev_cluster, "node2") and ids[1] in _ps_all(dev_cluster, "node3")
    again = dev_cluster.cli("container", "prune", "-f", "--filter", f"label={label}").stdout
    assert ids[1] in again and ids[1] not in _ps_all(dev_cluster, "node3")
