"""Datasets between nodes: every agent serves its writable copies as streams over TCP, and pulls the copies
it is asked to hold (a move's target, a replica) from the owner's agent, agent to agent.

The receiver pulls: it says which transfer snapshots it holds (`have`), the sender takes a new read-only
snapshot of the writable copy and streams `btrfs send` of it, incremental from the newest snapshot both
hold (the directory pool streams a tar, always in full, by the same protocol). The receiver pipes the body
into `btrfs receive` under `copies/<id>/.incoming/` and puts the copy in place only when the stream ended
cleanly (HTTP/1.1 chunked: a sender killed half-way never sends the last chunk) and receive said yes; its
own checks (every command of the stream is checksummed; an incremental's parent is found by uuid) are the
rest. Nothing is held in memory: 1 MiB at a time, with back-pressure both ways.

Routes (on the address published at `shoal/nodes/<node>/transfer`):
    GET  /v1/copies/<id>?have=a,b&final=0|1   the stream (204: nothing written since the newest one held)
    POST /v1/pull/<id>  {"source": node, "final": bool}   pull a copy now (the manager's move does this)
    POST /v1/converge                          one convergence round now (after a fence: promote, demote)

`Transport` is the one place connections are made. On a secure cluster it is mutual TLS with the agents'
node certificates (`Transport.tls`): each end shows its node certificate and checks the other's against the
cluster's node CA (the manager calls with a client certificate it signs itself with that CA); on a cluster
brought up --insecure, plain TCP. The published address says which (`"tls": true`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from shoal import keys, pki
from shoal.data.faults import crash_point
from shoal.data.model import containers_using, is_dataset_id
from shoal.data.moves import (
    FINAL,
    OWNER,
    REPLICA,
    REPLICATE_EVERY,
    copy_name,
    newest_common,
    serves_writable,
    to_prune,
)
from shoal.data.pool import ondisk
from shoal.errors import BadRequest, Conflict, NotFound, ShoalError, Unavailable
from shoal.logs import kv

if TYPE_CHECKING:
    from shoal.agent.datasets import DataService

log = logging.getLogger("shoal.agent.transfer")
CHUNK = 1 << 20
# A dataset stream's pipes to and from btrfs send/receive are made as large as Linux allows by default
# (fs.pipe-max-size, 1 MiB): with the 64 KiB default, asyncio moves a 1 GiB stream in 16,384 reads and
# wake-ups on each side, which measured 250 MB/s here against 690 MB/s with 1 MiB (asyncio reads at most
# 256 KiB at a time). A node where the size cannot be raised keeps the default: slower, not wrong.
PIPE_SIZE = 1 << 20
PROGRESS_EVERY = 0.5  # seconds between progress writes to the registry during a pull
FLUSH_EVERY = 1.0  # seconds between writebacks of the pool while a copy is received
CONNECT = 3.0
LISTEN_ENV = "SHOAL_TRANSFER_LISTEN"  # host:port to serve on (default: every address, a free port)


@dataclass(frozen=True, slots=True)
class Transport:
    """How agents reach each other. With `server`/`client` SSL contexts (mutual TLS: `tls`) every stream
    is wrapped; without, plain TCP (a cluster brought up --insecure)."""

    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None

    @staticmethod
    def tls(ca: Path, cert: Path, key: Path) -> Transport:
        """Mutual TLS with a node certificate: the listener asks every caller for a certificate of the node
        CA (`ca`), and the caller checks the listener's (its address among the certificate's SANs)."""
        return Transport(pki.server_context(ca, cert, key), pki.client_context(ca, cert, key))

    @property
    def secure(self) -> bool:
        return self.client is not None

    def reload(self, cert: Path, key: Path) -> None:
        """A renewed node certificate, for the connections made from now on (the contexts are kept: a
        listener's and a session's context cannot be swapped, their certificate can)."""
        for ctx in (self.server, self.client):
            if ctx is not None:
                ctx.load_cert_chain(cert, key)

    def site(self, runner: web.AppRunner, host: str, port: int) -> web.TCPSite:
        return web.TCPSite(runner, host, port, ssl_context=self.server)

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.client if self.client is not None else False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT, sock_read=60.0),
            # aiohttp's default (64 KiB) paused the socket every 128 KiB of a 1 GiB stream: a pull ran at
            # ~115 MB/s with both agents mostly idle
            read_bufsize=4 * CHUNK,
        )

    def url(self, address: str, path: str) -> str:
        return f"{'https' if self.client is not None else 'http'}://{address}{path}"


def _error_reply(e: ShoalError) -> web.Response:
    status = {"bad_request": 400, "not_found": 404, "conflict": 409, "unavailable": 503}.get(e.kind, 500)
    return web.json_response({"message": e.message, "kind": e.kind}, status=status)


def _local_address(registry_base: str) -> str:
    """The address other nodes reach this one by: the one this host uses towards the registry."""
    host = urlsplit(registry_base).hostname or "127.0.0.1"
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        try:
            s.connect((host, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class Transfer:
    def __init__(self, service: DataService, transport: Transport | None = None) -> None:
        self.service = service
        self.transport = transport or Transport()
        self.address = ""
        self.receiving: dict[str, dict[str, Any]] = {}  # dataset id -> progress of a pull under way
        # dataset id -> receiving node -> the copy last sent there: never pruned, so each receiver (a move's
        # target and every replica, pulling at their own pace) keeps a base for its next increment
        self.sent: dict[str, dict[str, str]] = {}
        self.in_use: dict[str, list[str]] = {}  # dataset id -> copies being streamed now (never pruned)
        self._locks: dict[str, asyncio.Lock] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/copies/{id}", self._send)
        app.router.add_post("/v1/pull/{id}", self._pull_handler)
        app.router.add_post("/v1/converge", self._converge)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = os.environ.get(LISTEN_ENV, "0.0.0.0:0").rpartition(":")
        site = self.transport.site(self._runner, host or "0.0.0.0", int(port or 0))
        try:
            await site.start()
        except OSError as e:
            kv(log, "transfer not served", logging.WARNING, node=self.service.node, error=str(e))
            return
        server = site._server  # the bound port (0 asks the kernel for a free one)
        bound = server.sockets[0].getsockname()[1] if server and server.sockets else int(port or 0)
        ip = host if host and host != "0.0.0.0" else _local_address(self.service.records.registry.base)
        self.address = f"{ip}:{bound}"
        self._session = self.transport.session()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publish()), loop.create_task(self._replicate_loop())]
        kv(log, "transfer served", node=self.service.node, address=self.address)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _publish(self) -> None:
        """Where this agent serves, kept in the registry (written again if the registry lost it)."""
        reg = self.service.records.registry
        doc = {
            "node": self.service.node,
            "address": self.address,
            "tls": self.transport.secure,
            "pid": os.getpid(),
        }
        while True:
            with contextlib.suppress(ShoalError):
                if await reg.get_json(keys.node_transfer(self.service.node)) != doc:
                    await reg.put(keys.node_transfer(self.service.node), doc)
            await asyncio.sleep(10.0)

    def lock(self, dataset_id: str) -> asyncio.Lock:
        return self._locks.setdefault(dataset_id, asyncio.Lock())

    # --- the sender ---------------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._send_copy(request)
        except ShoalError as e:
            return _error_reply(e)

    async def _send_copy(self, request: web.Request) -> web.StreamResponse:
        s = self.service
        i = request.match_info["id"]
        if not is_dataset_id(i):
            raise BadRequest(f"{i[:60]!r} is not a dataset id")
        have = [h for h in request.query.get("have", "").split(",") if h]
        final = request.query.get("final") == "1"
        to = request.query.get("to", "")[:255]
        record, _ = await s.records.record(i)
        mine = await asyncio.to_thread(ondisk.read, s.pool.records, i)
        if mine is None or not serves_writable(record, s.node, mine.role, mine.dataset.epoch):
            where = f"{record.node} at epoch {record.epoch}" if record else "nowhere"
            raise Conflict(f"{s.node} does not hold the writable copy of {i} (the registry says {where})")
        if final:
            move, _ = await s.records.move(i)
            if move is None or move.phase != FINAL or move.source != s.node:
                raise Conflict(f"no move of {i} from {s.node} is in its final phase")
            containers = await s.containers()
            if containers is None:
                raise Unavailable(f"{s.node}'s engine did not say whether a container still uses {i}")
            running = [c for c in containers if c.get("State") in ("running", "paused", "restarting")]
            users = containers_using(record, running, s.path_of_id(i))
            if users:
                raise Conflict(f"container(s) {', '.join(users)} on {s.node} still run on {i}")
        async with self.lock(i):  # the snapshot and the choice of base; the stream runs outside it
            copies = await asyncio.to_thread(s.pool.copies, i)
            unchanged = not final and have and copies and max(copies) in have
            if unchanged and not await asyncio.to_thread(s.pool.changed_since, i, max(copies)):
                return web.Response(status=204, headers={"X-Shoal-Copy": max(copies)})
            now = time.time()
            name = copy_name(record.epoch, now)
            await asyncio.to_thread(s.pool.take_copy, i, name)
            parent = newest_common(copies, have) if s.pool.incremental() else ""
            in_use = self.in_use.setdefault(i, [])
            in_use += [name, parent]
        try:
            resp, sent = await self._stream(request, i, name, parent, record.epoch, now, final)
        finally:
            in_use.remove(name)
            in_use.remove(parent)
        async with self.lock(i):
            sent_to = self.sent.setdefault(i, {})
            sent_to[to] = name
            kept = await asyncio.to_thread(s.pool.copies, i)
            pinned = [name, parent, *sent_to.values(), *in_use]
            await asyncio.to_thread(s.pool.prune, i, to_prune(kept, pinned=pinned))
        kv(log, "copy sent", node=s.node, dataset=i, copy=name, parent=parent or "-", bytes=sent, final=final)
        return resp

    async def _stream(
        self, request: web.Request, i: str, name: str, parent: str, epoch: int, now: float, final: bool
    ) -> tuple[web.StreamResponse, int]:
        argv = self.service.pool.send_argv(i, name, parent)
        headers = {
            "X-Shoal-Copy": name,
            "X-Shoal-Parent": parent,
            "X-Shoal-Taken": f"{now:.3f}",
            "X-Shoal-Epoch": str(epoch),
            "Content-Type": "application/octet-stream",
        }
        resp = web.StreamResponse(headers=headers)
        out, into = os.pipe()
        _widen(into)
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=into, stderr=asyncio.subprocess.PIPE)
        except BaseException:
            os.close(out)
            raise
        finally:
            os.close(into)
        reader = asyncio.StreamReader(limit=CHUNK)
        pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(out, "rb", 0)
        )
        pipe.max_size = CHUNK  # asyncio reads a pipe 256 KiB at a time; the pipe holds PIPE_SIZE
        sent = 0
        try:
            await resp.prepare(request)
            if request.transport is not None:  # whole chunks in flight, not a wake-up per 64 KiB sent
                request.transport.set_write_buffer_limits(high=4 * CHUNK)
            while chunk := await reader.read(CHUNK):
                await resp.write(chunk)
                sent += len(chunk)
                crash_point("send-mid")
                if final:
                    crash_point("send-final-mid")
            err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
            if await proc.wait() != 0:
                raise ShoalError(f"{' '.join(argv[:2])} of {i} failed: {err}")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if request.transport is not None:
                request.transport.abort()  # no last chunk: the receiver throws the copy away
            raise
        finally:
            pipe.close()
        await resp.write_eof()
        return resp, sent

    # --- the receiver -------------------------------------------------------------------------------

    async def _pull_handler(self, request: web.Request) -> web.Response:
        try:
            i = request.match_info["id"]
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("source"), str):
                raise BadRequest('a pull needs {"source": NODE}')
            got = await self.pull(i, body["source"], bool(body.get("final")))
            return web.json_response(got)
        except ShoalError as e:
            return _error_reply(e)
        except ValueError:
            return _error_reply(BadRequest("the pull request is not JSON"))

    async def _converge(self, request: web.Request) -> web.Response:
        try:
            p = await self.service.convergence.round()
        except ShoalError as e:
            return _error_reply(e)
        return web.json_response({"steps": [str(x) for x in p.steps], "reports": list(p.reports)})

    async def address_of(self, node: str) -> str:
        doc = await self.service.records.registry.get_json(keys.node_transfer(node))
        if not isinstance(doc, dict) or not isinstance(doc.get("address"), str):
            raise Unavailable(f"{node}'s agent serves no dataset transfers (is it up? `shoal nodes`)")
        return doc["address"]

    async def pull(self, i: str, source: str, final: bool = False) -> dict[str, Any]:
        """Pulls the newest copy of dataset `i` from `source`'s agent onto this pool, as a replica (never
        the writable copy: only the fence and a promotion make that). Returns what was received."""
        s = self.service
        if not is_dataset_id(i):
            raise BadRequest(f"{i[:60]!r} is not a dataset id")
        if source == s.node:
            raise BadRequest(f"{s.node} cannot pull {i} from itself")
        record, _ = await s.records.record(i)
        if record is None:
            raise NotFound(f"no dataset {i} in the registry")
        assigned, _ = await s.records.replicas(i)
        if assigned is None or s.node not in assigned.nodes:
            # every copy stays tracked: a node receives one only once the assignment names it (a move
            # puts its target there when it begins), so the deletion chain reaches every copy
            raise Conflict(f"{s.node} is not assigned a copy of {i}; the manager assigns replicas and moves")
        assert self._session is not None
        url = self.transport.url(await self.address_of(source), f"/v1/copies/{i}")
        async with self.lock(i):
            mine = await asyncio.to_thread(ondisk.read, s.pool.records, i)
            if mine is not None and mine.role == OWNER and not mine.deleting:
                raise Conflict(f"{s.node} holds {i} as its own writable copy; nothing to pull")
            if mine is None:  # the record first: a copy is never on a pool without it
                pooled = replace(record, node="", recovered=0.0, conflict="")
                await asyncio.to_thread(ondisk.write, s.pool.records, pooled, 0.0, REPLICA)
            have = await asyncio.to_thread(s.pool.copies, i)
            params = {"have": ",".join(have), "final": "1" if final else "0", "to": s.node}
            t0 = time.time()
            try:
                async with self._session.get(url, params=params) as r:
                    if r.status == 204:  # nothing written since the newest copy held: no lag as of t0
                        name = r.headers.get("X-Shoal-Copy", "")
                        status = {"snapshot": name, "taken": t0, "synced": time.time(), "bytes": 0,
                                  "seconds": 0.0, "error": ""}  # fmt: skip
                        with contextlib.suppress(ShoalError):
                            await s.records.set_replica_status(i, s.node, status)
                        return {**status, "copy": name, "unchanged": True}
                    if r.status != 200:
                        raise _remote_error(r.status, await r.read(), source)
                    name = r.headers["X-Shoal-Copy"]
                    taken = float(r.headers.get("X-Shoal-Taken", t0))
                    received = await self._receive(i, name, r, final)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                why = str(e) or type(e).__name__
                raise Unavailable(f"the stream of {i} from {source} broke off: {why}") from e
            finally:
                self.receiving.pop(i, None)
            await asyncio.to_thread(s.pool.received, i, name)
            crash_point("receive-done")
            kept = await asyncio.to_thread(s.pool.copies, i)
            await asyncio.to_thread(s.pool.prune, i, to_prune(kept, pinned=[name]))
        took = time.time() - t0
        status = {"snapshot": name, "taken": taken, "synced": time.time(), "bytes": received,
                  "seconds": round(took, 3), "error": ""}  # fmt: skip
        with contextlib.suppress(ShoalError):
            await s.records.set_replica_status(i, s.node, status)
        kv(log, "copy received", node=s.node, dataset=i, source=source, copy=name, bytes=received,
           seconds=f"{took:.2f}", final=final)  # fmt: skip
        return {**status, "copy": name}

    async def _receive(self, i: str, name: str, r: aiohttp.ClientResponse, final: bool = False) -> int:
        s = self.service
        await asyncio.to_thread(s.pool.receiving, i, name)
        argv = s.pool.receive_argv(i, name)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        _widen(proc.stdin.transport.get_extra_info("pipe").fileno())
        proc.stdin.transport.set_write_buffer_limits(high=CHUNK)
        progress = {"copy": name, "bytes": 0, "started": time.time()}
        self.receiving[i] = progress
        loop = asyncio.get_running_loop()
        reporter = loop.create_task(self._report_progress(i))
        flusher = loop.create_task(self._flush_while_receiving())
        try:
            async for chunk in r.content.iter_chunked(CHUNK):
                proc.stdin.write(chunk)
                await proc.stdin.drain()
                progress["bytes"] += len(chunk)
                crash_point("receive-mid")
                if final:
                    crash_point("receive-final-mid")
            proc.stdin.close()
            err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
            if await proc.wait() != 0:
                raise ShoalError(f"{' '.join(argv[:2])} of {i} refused the stream: {err}")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        finally:
            reporter.cancel()
            flusher.cancel()
        await asyncio.to_thread(s.pool.flush)  # the copy is on disk before it counts as received
        return int(progress["bytes"])

    async def _flush_while_receiving(self) -> None:
        """Writes the pool back every FLUSH_EVERY seconds while a stream lands: on a node with RAM to spare
        the kernel would otherwise hold the whole copy dirty until the next commit (a 1 GiB copy: 4.5 s of
        writeback after the stream, measured), so the stream and the writeback overlap instead."""
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.service.pool.flush)

    async def _report_progress(self, i: str) -> None:
        """Bytes and rate of a pull under way, for `shoal volume inspect` (best effort)."""
        records = self.service.records
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            p = self.receiving.get(i)
            if p is None:
                return
            rate = p["bytes"] / max(1e-3, time.time() - p["started"])
            doc = {**p, "rate": rate, "node": self.service.node}
            with contextlib.suppress(ShoalError):
                await records.set_replica_status(i, self.service.node, doc, receiving=True)

    # --- replicas -------------------------------------------------------------------------------------

    async def _replicate_loop(self) -> None:
        """Every REPLICATE_EVERY seconds: each dataset this node is a replica of is pulled from its owner
        (an increment; nothing when nothing was written since)."""
        s = self.service
        while True:
            await asyncio.sleep(REPLICATE_EVERY)
            try:
                assigned = await s.records.replicas_of(s.node)
                records = s.cluster.records if s.cluster is not None else {}
            except ShoalError:
                continue
            for i in assigned:
                d = records.get(i)
                if d is None or d.node == s.node:
                    continue
                try:
                    await self.pull(i, d.node)
                except asyncio.CancelledError:
                    raise
                except ShoalError as e:
                    with contextlib.suppress(ShoalError):
                        doc = await s.records.registry.get_json(keys.replica_status(i, s.node)) or {}
                        if isinstance(doc, dict) and doc.get("error") != e.message:
                            await s.records.set_replica_status(i, s.node, {**doc, "error": e.message})
                except Exception as e:  # one dataset's trouble never stops the others
                    kv(log, "replica pull failed", logging.WARNING, node=s.node, dataset=i, error=str(e))


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _remote_error(status: int, body: bytes, node: str) -> ShoalError:
    try:
        msg = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        msg = body.decode(errors="replace")[:200]
    msg = f"{node}: {msg or status}"
    return {409: Conflict, 404: NotFound, 400: BadRequest, 503: Unavailable}.get(status, ShoalError)(msg)
