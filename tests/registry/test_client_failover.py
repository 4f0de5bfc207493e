"""The registry client given several addresses (issue 16: agents take every manager's registry), against
real `shoal registry` processes over one real etcd, so every registry sees the same data: a dead address
first is skipped and the live one kept; killing (-9) the registry a client is using, mid-run, costs its
callers nothing (KV, sessions and a blocking query held on the dead one all answer from the other); and a
write whose connection was cut after it was sent is never sent again, neither to the same registry (as
aiohttp would on its own) nor to the next. And the address list itself: a bad entry is a clear error
naming it, whatever the list looks like (hypothesis)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import aiohttp
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import BadRequest, RegistryUnreachable
from shoal.registry.client import KVPair, RegistryClient, addresses, base_url, never_sent
from shoal.registry.etcd_server import free_port
from tests.registry.conftest import RegistryProc, start_registry, stop_registry


def _prefix() -> str:
    return f"failover/{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _two_registries(etcd_endpoint: str) -> Iterator[tuple[RegistryProc, RegistryProc]]:
    """Two registries over one etcd, as two managers' registries are; both stopped at the end."""
    a = start_registry(f"etcd://{etcd_endpoint}")
    try:
        b = start_registry(f"etcd://{etcd_endpoint}")
        try:
            yield a, b
        finally:
            stop_registry(b)
    finally:
        stop_registry(a)


@pytest.fixture(scope="module")
def pair(etcd_endpoint: str) -> Iterator[tuple[RegistryProc, RegistryProc]]:
    """Not killed by the tests using it."""
    with _two_registries(etcd_endpoint) as both:
        yield both


@pytest.fixture
def doomed_pair(etcd_endpoint: str) -> Iterator[tuple[RegistryProc, RegistryProc]]:
    """Two more, the first of which the test kills."""
    with _two_registries(etcd_endpoint) as both:
        yield both


# --- a dead address, a live one --------------------------------------------------------------------------


def test_a_client_given_a_dead_address_then_a_live_one_works_and_stays_on_the_live_one(pair):
    _, live = pair
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: every connection is refused
    key = f"{_prefix()}/k"

    async def main() -> tuple:
        async with aiohttp.ClientSession() as s:
            c = RegistryClient(f"{dead},{live.url}", s)
            wrote = await c.put(key, {"v": 1})
            on = c.base
            got = await c.get_json(key)
            created = await c.txn([{"Verb": "cas", "Key": f"{key}-t", "Value": "x", "Index": 0}])
            return wrote, on, got, created[0], c.base

    wrote, on, got, created, still_on = asyncio.run(main())
    assert wrote is True and got == {"v": 1} and created is True
    assert on == still_on == live.url


def test_a_client_whose_every_address_is_dead_says_which_and_why(pair):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]

    async def main() -> str:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(RegistryUnreachable) as e:
                await RegistryClient(",".join(dead), s).put(f"{_prefix()}/k", "v")
            return e.value.message

    message = asyncio.run(main())
    assert "none of the 2 registry addresses answered" in message
    assert all(f"http://{d}" in message for d in dead)


# --- the registry in use killed mid-run ---------------------------------------------------------------------


def _connections(r: RegistryProc) -> int:
    """Established TCP connections into r's HTTP port (what r is serving now)."""
    return sum(
        1
        for c in psutil.Process(r.proc.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == r.http_port
    )


def test_killing_the_registry_in_use_costs_the_client_nothing(doomed_pair):
    """KV, a session and its lock, and a blocking query held on `a` when it is killed -9: all go on on
    `b`, without one error reaching the caller."""
    a, b = doomed_pair
    prefix = _prefix()

    async def main() -> dict:
        async with aiohttp.ClientSession() as s, aiohttp.ClientSession() as watch_s:
            c = RegistryClient(f"{a.url},{b.url}", s)
            w = RegistryClient(
                f"{a.url},{b.url}", watch_s
            )  # its own pool: the held query is its one connection
            assert await c.put(f"{prefix}/before", "1")
            sid = await c.session_create("agent-n1", "30s")
            assert await c.put(f"{prefix}/lock", "n1", acquire=sid)
            _, index = await c.list_prefix(prefix)
            on_before = (c.base, w.base)

            idle = _connections(a)
            held = asyncio.create_task(w.list_prefix(prefix, index=index, wait=60.0))
            deadline = time.monotonic() + 30
            while _connections(a) <= idle and not held.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # the request read, the query waiting for a change
            was_held = _connections(a) > idle and not held.done()

            a.proc.kill()  # SIGKILL, as a manager host dies
            await asyncio.to_thread(a.proc.wait)
            # let the loop see the dead registry's connections close (as it would long before a client's
            # next write, outside a test): a write on one it had not yet seen close is one the client
            # cannot tell from a write the registry took and died answering, and it is refused as such
            await asyncio.sleep(0.1)

            wrote = await c.put(f"{prefix}/after", "2")  # wakes the held query, now on b
            pairs, _ = await asyncio.wait_for(held, 90)
            return {
                "on_before": on_before,
                "was_held": was_held,
                "wrote": wrote,
                "read": await c.get_json(f"{prefix}/before"),
                "renewed": await c.session_renew(sid),
                "lock": (await c.get(f"{prefix}/lock")).session,
                "seen": {p.key: p.text() for p in pairs},
                "on_after": (c.base, w.base),
            }

    got = asyncio.run(main())
    assert got["on_before"] == (a.url, a.url)
    assert got["was_held"], "the blocking query was not held on the registry that was killed"
    assert got["wrote"] is True and got["read"] == 1
    assert got["renewed"] is True and got["lock"], "the session or its lock did not survive the failover"
    assert got["seen"].get(f"{prefix}/after") == "2"
    assert got["on_after"] == (b.url, b.url)


# --- a write cut off after it was sent ---------------------------------------------------------------------


class CuttingHop:
    """A TCP hop in front of a real registry that passes each request on, waits for the registry's answer
    (so the write is applied), and then cuts the client's connection (RST) instead of answering: a
    registry dying between applying a write and answering it, as the client sees it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
                up_w.write(request)
                await up_w.drain()
                await up_r.readuntil(b"\r\n\r\n")  # the registry answered: the write is applied
                up_w.close()
                writer.transport.abort()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_a_write_cut_off_after_it_was_sent_is_not_sent_again(pair):
    """Through the cutting hop to `a`, then `b`: the session create and the KV write are applied once
    each (through the hop), the client raises instead of sending either again (to the hop or to `b`), and
    the next call goes to `b`. A read cut off the same way is asked again, and answered by `b`."""
    a, b = pair
    prefix = _prefix()
    name = f"cut-{uuid.uuid4().hex[:8]}"

    async def main() -> dict:
        hop = CuttingHop(a.http_port)
        via = await hop.start()
        try:
            async with aiohttp.ClientSession() as s:
                c = RegistryClient(f"{via},{b.url}", s)
                with pytest.raises(RegistryUnreachable) as create:
                    await c.session_create(name, "30s")
                after_create = (len(hop.requests), c.base)

                c = RegistryClient(f"{via},{b.url}", s)
                with pytest.raises(RegistryUnreachable) as put:
                    await c.put(f"{prefix}/k", "once", cas=0)
                after_put = (len(hop.requests), c.base)
                pair_written = await c.get(f"{prefix}/k")  # from b now

                reads = RegistryClient(f"{via},{b.url}", s)
                read = (await reads.get(f"{prefix}/k") or KVPair("", b"")).text()
                after_read = (len(hop.requests), reads.base)

                return {
                    "create": create.value.message,
                    "after_create": after_create,
                    "put": put.value.message,
                    "after_put": after_put,
                    "written": pair_written,
                    "read": read,
                    "after_read": after_read,
                }
        finally:
            await hop.stop()

    got = asyncio.run(main())
    sessions = [x for x in b.client().session.list()[1] if x.get("Name") == name]
    assert got["after_create"] == (1, b.url), "the cut session create was sent again"
    assert "not sent again" in got["create"] and b.url in got["create"]
    assert len(sessions) == 1, f"the session create was applied {len(sessions)} times"
    assert got["after_put"] == (2, b.url), "the cut KV write was sent again"
    written = got["written"]
    assert written is not None and written.text() == "once" and written.modify_index == written.create_index
    assert "not sent again" in got["put"]
    # a read may be repeated (aiohttp asks the hop twice itself): it ends on b, with the answer
    assert got["read"] == "once" and got["after_read"][1] == b.url


# --- the address list ---------------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_hosts = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)


@st.composite
def _entry(draw: st.DrawFn) -> tuple[str, str]:
    """(an address as a user may write it, the base URL it stands for)."""
    host = draw(_hosts)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    scheme = draw(st.sampled_from(["", "http://", "https://", "HTTPS://"]))
    authority = host if port is None else f"{host}:{port}"
    text = f"{draw(st.sampled_from(['', ' ']))}{scheme}{authority}{draw(st.sampled_from(['', '/']))}"
    return text, f"{scheme.lower() or 'http://'}{authority}"


@given(st.lists(_entry(), min_size=1, max_size=5))
@settings(max_examples=100, deadline=None)
def test_a_good_list_gives_each_base_once_in_its_order(entries):
    got = addresses(",".join(text for text, _ in entries))
    assert got == tuple(dict.fromkeys(url for _, url in entries))
    assert addresses(",".join(got)) == got  # the output is a list the parser takes as it is
    if len(entries) == 1 and entries[0][0].strip()[:5] != "HTTPS":  # one address means what it always did
        assert got == (base_url(entries[0][0].strip()),)


_bad = st.one_of(
    st.just(""),
    st.just("   "),
    st.builds(lambda h: f"{h}:", _hosts),
    st.builds(lambda h, p: f"{h}:{p}", _hosts, st.sampled_from(["0", "65536", "99999", "http", "8o", "-1"])),
    st.builds(lambda h, s: f"{s}://{h}", _hosts, st.sampled_from(["ftp", "unix", "tcp", "etcd", ""])),
    st.builds(lambda h, p: f"http://{h}{p}", _hosts, st.sampled_from(["/v1", "/x/", "?a=1", "#f"])),
    st.builds(lambda h: f"user@{h}", _hosts),
    st.builds(lambda h: f"{h} :80", _hosts),
    st.sampled_from(["[zz::1]:80", "[::1", "::1:8500", "http://:80", "-host:1", "host-:1", "a..b:1"]),
)


@given(st.lists(_entry(), max_size=3), _bad, st.lists(_entry(), max_size=3))
@settings(max_examples=100, deadline=None)
def test_a_bad_entry_is_a_clear_error_naming_it(before, bad, after):
    text = ",".join([*(t for t, _ in before), bad, *(t for t, _ in after)])
    with pytest.raises(BadRequest) as e:
        addresses(text)
    assert repr(bad.strip()) in e.value.message
    assert "HOST:PORT" in e.value.message  # and the way out


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_any_text_is_a_list_of_urls_or_a_bad_request(text):
    try:
        got = addresses(text)
    except BadRequest:
        return
    assert got and all(u.startswith(("http://", "https://")) and "," not in u for u in got)
    assert addresses(",".join(got)) == got


def test_a_join_list_takes_https_only():
    assert addresses("a:2377,https://b:2377", scheme="https", schemes=("https",), what="manager") == (
        "https://a:2377",
        "https://b:2377",
    )
    with pytest.raises(
        BadRequest, match=r"the manager address 'http://b:2377' in .* names the scheme 'http'"
    ):
        addresses("a:2377,http://b:2377", scheme="https", schemes=("https",), what="manager")


def test_a_body_cut_off_by_a_closed_connection_was_never_sent_but_a_lost_answer_may_have_been_applied():
    # as aiohttp raises them: the body write on a kept-alive connection the dead peer had closed ...
    cut = aiohttp.ClientOSError(None, "Can not write request body for https://127.0.0.1:1/v1/kv/x")
    cut.__cause__ = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    assert never_sent(cut)
    # ... against a request sent whole whose answer never came: it may have been applied
    lost = aiohttp.ServerDisconnectedError()
    assert not never_sent(lost)
    reset_after = aiohttp.ClientOSError(104, "Connection reset by peer")
    assert not never_sent(reset_after)
