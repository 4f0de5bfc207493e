"""Join tokens and node certificates over their lifetimes (issue 13), against real processes on loopback
(a `shoal registry`, `shoal init`'s CAs, a `shoal manager` with its join listener; the agent in this process
where its clock must be moved): an expired join token is refused with the way to a new one; a node
certificate is due for renewal at two thirds of its life and not before; a due agent renews it through the
manager and uses the new one everywhere at once; and a renewal that fails, or whose answer is lost, leaves
the agent publishing with the certificate it has and renewing once it can.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import os
import re
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal import keys, pki
from shoal.agent import join
from shoal.agent.loop import RENEW_RETRY, Agent, AgentConfig
from shoal.agent.transfer import LISTEN_ENV
from shoal.data.model import Dataset
from tests.registry.conftest import RegistryProc, sqlite_registry
from tests.unit.agent.managers import SHOAL, ManagerProc, start_manager

DAY = 86400.0


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryProc]:
    with sqlite_registry() as r:
        yield r


@pytest.fixture(scope="module")
def tls() -> Path:
    """`shoal init`'s certificate directory: the two CAs, the join listener's certificate."""
    d = Path(tempfile.mkdtemp(prefix="shoal-lifetimes-")) / "tls"
    subprocess.run([*SHOAL, "init", "--dir", str(d), "--name", "127.0.0.1"], check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def manager(tls, registry) -> Iterator[ManagerProc]:
    m = start_manager(tls, registry)
    try:
        yield m
    finally:
        m.kill()


# --- an expired join token ----------------------------------------------------------------------------------


def test_an_expired_join_token_is_refused_with_the_way_to_a_new_one(manager, registry, tmp_path):
    token = manager.token(ttl=60)  # the shortest a token lives
    token_id, secret = re.fullmatch(r"SHOAL-1-[0-9a-f]{64}-([0-9a-f]{16})\.(.+)", token).groups()
    consul = registry.client()
    # a minute passes: the token's registry record (the only place its expiry is kept, beside the secret's
    # hash) says it expired a second ago
    _, pair = consul.kv.get(keys.join_token(token_id))
    record = json.loads(pair["Value"])
    assert record["expires"] > time.time()
    consul.kv.put(keys.join_token(token_id), json.dumps({**record, "expires": time.time() - 1}))
    listing = subprocess.run(
        [*SHOAL, "token", "ls", "-H", f"tcp://127.0.0.1:{manager.api}"],
        check=True, capture_output=True, text=True, env={**os.environ, "DOCKER_TLS_VERIFY": ""},
    ).stdout  # fmt: skip
    assert next(line for line in listing.splitlines() if token_id in line).endswith("(expired)"), listing

    node = f"n{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    got = subprocess.run(
        [*SHOAL, "agent", "--manager", manager.join_url, "--join", token, "--node", node,
         "--state-dir", str(state), "--engine", f"unix://{tmp_path}/no-engine.sock", "--interval", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 1, got.stderr
    assert "this join token expired; get a new one with `shoal token create`" in got.stderr, got.stderr
    assert secret not in got.stderr + got.stdout
    assert not (state / "credentials.json").exists()  # nothing granted: a restart needs a new token
    assert consul.kv.get(keys.identity(node))[1] is None  # and the node name is still free


# --- when a certificate is due ------------------------------------------------------------------------------


def _certificate(
    ca: pki.Pair,
    node: str,
    not_before: float,
    not_after: float,
    public_key: ec.EllipticCurvePublicKey | None = None,
) -> bytes:
    """A node certificate with the given life, signed by the node CA (as the manager signs them)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key or pki.new_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.mark.parametrize("life", [3000.0, 90 * DAY])
def test_a_certificate_is_due_once_two_thirds_of_its_life_have_passed_and_not_before(tmp_path, life):
    ca = pki.make_ca("lifetimes")
    start = 1_800_000_000.0
    (tmp_path / "cert.pem").write_bytes(_certificate(ca, "n1", start, start + life))
    creds = join.Credentials(tmp_path, "", "", "")
    two_thirds = start + life * 2 / 3
    assert not creds.due(start)
    assert not creds.due(start + life / 2)
    assert not creds.due(two_thirds - 1)
    assert creds.due(two_thirds)
    assert creds.due(two_thirds + 1)
    assert creds.due(start + life + 1)  # past its end: long due


def test_a_certificate_the_manager_signs_is_due_after_sixty_days_of_its_ninety(tmp_path):
    ca = pki.make_ca("lifetimes")
    key = pki.new_key()
    (tmp_path / "cert.pem").write_bytes(pki.sign_request(ca, pki.read_csr(pki.make_csr(key, "n1", ["n1"]))))
    creds = join.Credentials(tmp_path, "", "", "")
    now = time.time()
    assert not creds.due(now)
    assert not creds.due(now + 59 * DAY)
    assert creds.due(now + 61 * DAY)


# --- renewing when due ------------------------------------------------------------------------------------


def _config(manager: ManagerProc, token: str, node: str, tmp: Path) -> AgentConfig:
    """A joining agent with a dataset pool (its records go through the manager with the node certificate,
    its dataset streams are served with it); no engine (its facts say so, nothing else needs one)."""
    (tmp / "plugins").mkdir(exist_ok=True)
    return AgentConfig(
        manager=manager.join_url,
        node=node,
        engine=f"unix://{tmp}/no-engine.sock",
        interval=1.0,
        pool=tmp / "pool",
        pool_kind="dir",
        mount_prefix=tmp / "pool" / "datasets",
        plugins_dir=tmp / "plugins",
        join_token=token,
        state_dir=tmp / "state",
    )


def _held(registry: RegistryProc, node: str) -> str:
    """The fingerprint of the certificate the manager says `node` holds."""
    _, pair = registry.client().kv.get(keys.identity(node))
    return json.loads(pair["Value"])["fingerprint"]


async def _served_certificate(agent: Agent) -> bytes:
    """The certificate the agent's dataset stream listener shows a caller now (a new connection)."""
    creds = agent.credentials
    assert creds is not None and agent.data is not None
    host, port = agent.data.transfer.address.rsplit(":", 1)
    ctx = pki.client_context(creds.ca, creds.cert, creds.key)
    _, writer = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=agent.config.node)
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _dataset(node: str, n: int) -> Dataset:
    return Dataset(str(uuid.uuid4()), f"vol-{node}-{n}", "default", node)


def test_a_due_agent_renews_its_certificate_and_uses_the_new_one_at_once(
    manager, registry, tmp_path, monkeypatch
):
    monkeypatch.setenv(LISTEN_ENV, "127.0.0.1:0")
    node = f"n{uuid.uuid4().hex[:6]}"

    async def main() -> None:
        async with Agent(_config(manager, manager.token(), node, tmp_path)) as agent:
            assert agent.credentials is not None and agent.data is not None
            cert, key = agent.credentials.cert, agent.credentials.key
            first_cert, first_key = cert.read_bytes(), key.read_bytes()
            records = agent.data.records
            first = _dataset(node, 1)
            await records.commit((first,))  # through the manager, with the node certificate
            assert _held(registry, node) == pki.fingerprint(first_cert)

            await agent._renew_if_due(time.time())  # fresh: nothing to do
            assert cert.read_bytes() == first_cert

            await agent._renew_if_due(pki.expires(first_cert) - DAY)  # well past two thirds of its life
            renewed = cert.read_bytes()
            assert renewed != first_cert and key.read_bytes() != first_key  # a new key, made here
            assert pki.common_name(renewed) == node
            assert pki.expires(renewed) - time.time() > 89 * DAY  # a whole new life
            assert _held(registry, node) == pki.fingerprint(renewed)  # the manager knows it as the node's
            # used at once: the next record write (the agent's connection to the manager may be the one it
            # made with the old certificate), the next dataset stream, the next publish
            second = _dataset(node, 2)
            await records.commit((second,))
            assert (await records.record(second.id))[0] is not None
            assert await _served_certificate(agent) == _der(renewed)
            await agent.publish(await agent.gather())
            # and renewed again, in time, with the new one
            await agent._renew_if_due(pki.expires(renewed) - DAY)
            assert _held(registry, node) == pki.fingerprint(cert.read_bytes()) != pki.fingerprint(renewed)

    asyncio.run(main())


def test_a_renewal_whose_answer_was_lost_is_asked_again_with_the_same_certificate(
    manager, registry, tmp_path, monkeypatch
):
    """The manager signed a new certificate and noted it as the node's, but the answer never reached the
    agent (a dropped connection, a manager killed as it answered): the agent still holds only the one it
    had, and renews with it."""
    monkeypatch.setenv(LISTEN_ENV, "127.0.0.1:0")
    node = f"n{uuid.uuid4().hex[:6]}"

    async def lost_renewal(creds: join.Credentials) -> None:
        """What the manager sees of a renewal whose answer is lost: the request, with the certificate."""
        csr = pki.make_csr(pki.new_key(), node, [node])
        ctx = pki.client_context(creds.ca, creds.cert, creds.key)
        async with aiohttp.ClientSession() as s:
            url = f"{manager.join_url}/shoal/v1/renew"
            async with s.post(url, json={"CSR": csr.decode()}, ssl=ctx) as r:
                assert r.status == 201, await r.text()

    async def main() -> None:
        async with Agent(_config(manager, manager.token(), node, tmp_path)) as agent:
            creds = agent.credentials
            assert creds is not None and agent.data is not None
            had = creds.cert.read_bytes()
            await lost_renewal(creds)
            assert _held(registry, node) != pki.fingerprint(had)
            # the agent goes on with its certificate: its record writes are still its node's
            await agent.data.records.commit((_dataset(node, 1),))
            await agent._renew_if_due(pki.expires(had) - DAY)
            renewed = creds.cert.read_bytes()
            assert renewed != had and _held(registry, node) == pki.fingerprint(renewed)
            await agent.data.records.commit((_dataset(node, 2),))

    asyncio.run(main())


def _make_due(tls: Path, registry: RegistryProc, creds: join.Credentials, node: str) -> bytes:
    """The node's certificate as it is 50 minutes into a life of 66: for the agent's own key, signed by the
    node CA, and kept by the node's identity record as the manager keeps what it signs."""
    ca = pki.Pair((tls / "node-ca.pem").read_bytes(), (tls / "node-ca-key.pem").read_bytes())
    key = serialization.load_pem_private_key(creds.key.read_bytes(), password=None)
    now = time.time()
    cert = _certificate(ca, node, now - 3000, now + 1000, key.public_key())  # type: ignore[arg-type]
    creds.cert.write_bytes(cert)
    consul = registry.client()
    _, pair = consul.kv.get(keys.identity(node))
    record = json.loads(pair["Value"])
    consul.kv.put(keys.identity(node), json.dumps({**record, "fingerprint": pki.fingerprint(cert)}))
    return cert


def test_a_due_agent_whose_managers_are_down_keeps_publishing_and_renews_once_one_is_back(
    tls, registry, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv(LISTEN_ENV, "127.0.0.1:0")
    caplog.set_level(logging.WARNING, logger="shoal.agent")
    node = f"n{uuid.uuid4().hex[:6]}"
    m = start_manager(tls, registry)

    def warned(words: str) -> int:
        return sum(words in r.getMessage() for r in caplog.records)

    def gathered_at() -> float:
        _, pair = registry.client().kv.get(keys.node_facts(node))
        return json.loads(pair["Value"])["gathered_at"]

    async def main() -> None:
        nonlocal m
        async with Agent(_config(m, m.token(), node, tmp_path)) as agent:
            creds = agent.credentials
            assert creds is not None
            await agent.publish(await agent.gather())
            due = _make_due(tls, registry, creds, node)
            m.kill()  # every manager it knows is down (kill -9); the registry is up
            # the agent's own loop, on the real clock: each round the certificate is due and cannot be renewed
            published, first_seen = agent.published, gathered_at()
            stop = asyncio.Event()
            loop = asyncio.create_task(agent.run(stop))
            deadline = time.monotonic() + 120
            while agent.published < published + 3 and not loop.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            stop.set()
            await loop  # it did not end: a failed renewal is no reason to stop
            assert agent.published >= published + 3, "the agent stopped publishing"
            assert await asyncio.to_thread(gathered_at) > first_seen  # fresh facts reached the registry
            assert warned("certificate renewal failed; using the current one") >= 1
            assert warned("registry unreachable") == 0  # the registry never was
            assert creds.cert.read_bytes() == due  # kept: good for a quarter of an hour more

            # asked again only RENEW_RETRY seconds after a failure, not every round
            later = time.time() + 2 * RENEW_RETRY
            failures = warned("certificate renewal failed")
            await agent._renew_if_due(later)
            assert warned("certificate renewal failed") == failures + 1
            await agent._renew_if_due(later + 1)
            assert warned("certificate renewal failed") == failures + 1

            back = functools.partial(start_manager, tls, registry, api=m.api, join_port=m.join)
            m = await asyncio.to_thread(back)  # back, on the same address
            await agent._renew_if_due(later + RENEW_RETRY)
            renewed = creds.cert.read_bytes()
            assert renewed != due and _held(registry, node) == pki.fingerprint(renewed)
            assert pki.expires(renewed) - time.time() > 89 * DAY

    try:
        asyncio.run(main())
    finally:
        m.kill()


@pytest.mark.parametrize(
    ("left", "key", "cert"),
    [
        # cut short after the key's rename: the new certificate goes in beside the new key
        ({"key.pem": "new-key", "cert.pem": "old-cert", "cert.pem.new": "new-cert"}, "new-key", "new-cert"),
        # cut short before either rename: the old pair stands, the new one is dropped
        (
            {"key.pem": "old-key", "cert.pem": "old-cert", "key.pem.new": "new-key", "cert.pem.new": "new-c"},
            "old-key",
            "old-cert",
        ),
        # cut short while the new key was being written: the old pair stands
        ({"key.pem": "old-key", "cert.pem": "old-cert", "key.pem.new": "new-"}, "old-key", "old-cert"),
    ],
    ids=["after-key-rename", "before-renames", "mid-key-write"],
)
def test_a_renewal_cut_short_loads_a_matching_key_and_certificate(tmp_path, left, key, cert):
    (tmp_path / "credentials.json").write_text(json.dumps({"registry": "https://127.0.0.1:8501"}))
    (tmp_path / "ca.pem").write_text("ca")
    for name, text in left.items():
        (tmp_path / name).write_text(text)
    creds = join.load(tmp_path)
    assert creds is not None
    assert (creds.key.read_text(), creds.cert.read_text()) == (key, cert)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem", "cert.pem", "credentials.json", "key.pem"]
