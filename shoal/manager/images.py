"""Images: one image id on several nodes is one image; load, pull and tag go to every node that should have
it, inspect, history, save and push to any node that has it, import to one node the scheduler picks, and a
create on a node that lacks its image pulls it there first (as classic Swarm did)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from shoal.cluster.engine import CONNECT, Engine, path
from shoal.cluster.state import tagged
from shoal.errors import BadRequest, EngineError, NoPlacement, NotFound, ShoalError, Unavailable
from shoal.manager.objects import on_every_node, successes
from shoal.manager.service import Route
from shoal.scheduler.model import ContainerSpec

if TYPE_CHECKING:
    from shoal.manager.service import Manager

FROM_A_HOLDER = frozenset({"json", "history", "get"})
LOAD_BUFFER = 16  # chunks of an archive waiting for one node
LOAD_TIMEOUT = 3600.0
PULL_TIMEOUT = 3600.0  # a whole pull, every layer (progress lines keep coming while it runs)
PULL_BUFFER = 64  # progress lines waiting for a slow client: the engines' streams wait behind them
PULL_PARAMS = ("fromImage", "tag", "platform")  # what a pull passes on to each engine


def split_ref(image: str) -> tuple[str, str]:
    """`host:5000/a/b:1` -> (`host:5000/a/b`, `1`); `b@sha256:..` -> (`b`, `sha256:..`); `b` -> (`b`,
    `latest`): the fromImage and tag a pull of `image` sends, as the docker CLI splits them (pure)."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest
    ref = tagged(image)
    repo, _, tag = ref.rpartition(":")
    return repo, tag


def node_line(msg: dict[str, Any], node: str) -> dict[str, Any]:
    """One of an engine's progress lines, saying its node: the layer id (the docker CLI redraws a line per
    id, so each node's layers keep their own lines) or, for a line without one, its status (pure)."""
    out = dict(msg)
    if out.get("id"):
        out["id"] = f"{node}: {out['id']}"
    elif "status" in out:
        out["status"] = f"{node}: {out['status']}"
    return out


def pull_error(errors: Mapping[str, str], nodes: int) -> str:
    """What a failed pull says: the registry's error once when every node got the same one (a name that
    does not exist), else each node's (pure)."""
    distinct = list(dict.fromkeys(errors.values()))
    if len(distinct) == 1 and len(errors) == nodes:
        return distinct[0]
    each = "; ".join(f"{node}: {msg}" for node, msg in errors.items())
    return f"pull failed on {', '.join(errors)} of {nodes} nodes: {each}"


def error_line(message: str) -> dict[str, Any]:
    """Docker's error line in a progress stream (the docker CLI stops and prints it)."""
    return {"errorDetail": {"message": message}, "error": message}


def line_error(msg: Mapping[str, Any]) -> str | None:
    if msg.get("error") or msg.get("errorDetail"):
        return str(msg.get("error") or (msg.get("errorDetail") or {}).get("message") or "pull failed")
    return None


def parse_line(raw: bytes) -> dict[str, Any] | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        msg = json.loads(raw)
    except ValueError:
        return {"status": raw.decode(errors="replace")}
    return msg if isinstance(msg, dict) else {"status": str(msg)}


async def open_pull(
    e: Engine, params: Mapping[str, str], headers: Mapping[str, str], timeout: float = PULL_TIMEOUT
) -> aiohttp.ClientResponse:
    """Starts a pull on one engine; its refusal (before any progress) is an EngineError, no answer an
    Unavailable. The caller reads the progress stream and releases it."""
    try:
        r = await e.session.request(
            "POST",
            e.url_for("/images/create"),
            params=dict(params),
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT),
            allow_redirects=False,
            ssl=e.ssl,
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise Unavailable(
            f"the engine on {e.node} ({e.url}) did not answer a pull: {err or type(err)}"
        ) from err
    if r.status >= 300:
        body = await r.read()
        r.release()
        raise EngineError.from_reply(r.status if r.status >= 400 else 502, body, e.node)
    return r


async def read_pull(r: aiohttp.ClientResponse, node: str) -> AsyncIterator[dict[str, Any]]:
    """An engine's progress lines as they come; the stream's own error line ends it as a ShoalError."""
    try:
        async for raw in r.content:
            msg = parse_line(raw)
            if msg is None:
                continue
            if (err := line_error(msg)) is not None:
                raise EngineError(500, err, node)
            yield msg
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise Unavailable(
            f"the engine on {node} stopped answering during the pull: {err or type(err)}"
        ) from err
    finally:
        r.release()


def _message(err: BaseException) -> str:
    return err.message if isinstance(err, ShoalError) else str(err) or type(err).__name__


async def _offer(
    queues: list[asyncio.Queue[bytes | None]], tasks: list[asyncio.Future[Any]], item: bytes | None
):
    """Hands `item` to every node still loading; one that failed is not waited for."""
    for q, t in zip(queues, tasks, strict=True):
        if t.done():
            continue
        put = asyncio.ensure_future(q.put(item))
        await asyncio.wait([put, t], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()


def merged(lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every node's image list as one: an id once, with every tag any node gives it (pure)."""
    out: dict[str, dict[str, Any]] = {}
    for lst in lists:
        for img in lst:
            have = out.setdefault(img["Id"], dict(img))
            have["RepoTags"] = sorted(set(have.get("RepoTags") or []) | set(img.get("RepoTags") or []))
    return list(out.values())


class Images:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def holders(self, name: str) -> list[str]:
        found = await self.m.cluster.image_holders(name)
        if not found:
            raise NotFound(f"No such image: {name}")
        return found

    async def listed(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        c = self.m.cluster
        results = await on_every_node(c, "GET", "/images/json", params=dict(query))
        return merged([r for _, r in successes(results)])

    async def route(self, name: str, what: str) -> Route:
        """inspect (json), history and get (`docker save` of one image): any node that holds it."""
        if what not in FROM_A_HOLDER:
            raise NotFound(f"page not found: /images/{{name}}/{what} is not a Docker API endpoint")
        node = (await self.holders(name))[0]
        return Route(self.m.cluster.engine(node), path("/images", name) + f"/{what}", object_id=name)

    async def save_route(self, names: list[str]) -> Route:
        """`docker save A B ...` (GET /images/get?names=...): from a node that holds every one of them."""
        if not names:
            raise BadRequest("docker save needs at least one image name")
        common = set(await self.holders(names[0]))
        for name in names[1:]:
            common &= set(await self.holders(name))
        if not common:
            raise NotFound(f"no node holds all of {', '.join(names)}; save them one at a time")
        return Route(self.m.cluster.engine(sorted(common)[0]), "/images/get")

    async def load(self, archive: AsyncIterator[bytes]) -> dict[str, Any]:
        """`docker load` through the manager loads onto every node: the archive streams to all of them at
        once, each through a small buffer (never the whole archive in memory), as fast as the slowest."""
        c = self.m.cluster
        engines = list(c.engines.values())
        queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(LOAD_BUFFER) for _ in engines]

        async def chunks(q: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
            while (chunk := await q.get()) is not None:
                yield chunk

        tasks = [
            asyncio.ensure_future(
                e.call("POST", "/images/load", params={"quiet": "1"}, data=chunks(q), timeout=LOAD_TIMEOUT)
            )
            for e, q in zip(engines, queues, strict=True)
        ]
        async for chunk in archive:
            await _offer(queues, tasks, chunk)
        await _offer(queues, tasks, None)
        outcome = await asyncio.gather(*tasks, return_exceptions=True)
        results = list(zip(engines, outcome, strict=True))
        errors = [f"{e.node}: {r}" for e, r in results if isinstance(r, BaseException)]
        await c.changed({"images"})
        if errors:
            raise ShoalError("load failed on " + "; ".join(errors))
        return {"stream": f"Loaded onto {len(results)} nodes\n"}

    async def tag(self, name: str, query: Mapping[str, str]) -> None:
        """A tag is given on every node that holds the image, so it keeps meaning one image everywhere."""
        c = self.m.cluster
        for node in await self.holders(name):
            await c.engine(node).call("POST", path("/images", name) + "/tag", params=dict(query))
        await c.changed({"images"})

    async def remove(self, name: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Removed from every node that holds it; the reply lists what each node untagged and deleted."""
        c = self.m.cluster
        out: list[dict[str, Any]] = []
        errors: list[ShoalError] = []
        for node in await self.holders(name):
            try:
                out += await c.engine(node).call("DELETE", path("/images", name), params=dict(query))
            except EngineError as e:
                errors.append(EngineError(e.status, f"{e.message} (on {node})", node))
        await c.changed({"images"})
        if errors:
            raise errors[0]
        return list({json.dumps(x, sort_keys=True): x for x in out}.values())

    # --- pull, push, import, and a create's pull ----------------------------------------------------

    def _healthy(self) -> list[Engine]:
        """The engines a pull goes to: those answering, whose agent's check is not critical."""
        c = self.m.cluster
        out = []
        for e in c.engines.values():
            state = c.index.get(e.node)
            if e.reachable and (state is None or state.health != "critical"):
                out.append(e)
        return out

    async def pull(self, query: Mapping[str, str], auth: str = "") -> AsyncGenerator[dict[str, Any], None]:
        """`docker pull` through the manager: onto every healthy node at once, each engine's progress lines
        passed on as they come, saying their node. Every node refusing (a name that does not exist) is one
        error before any progress; a node failing later ends the stream with Docker's error line, once.
        X-Registry-Auth goes to each engine as the client gave it."""
        params = {k: query[k] for k in PULL_PARAMS if query.get(k)}
        if not params.get("fromImage"):
            raise BadRequest("a pull needs fromImage (the image's name)")
        engines = self._healthy()
        if not engines:
            raise Unavailable("no healthy node to pull onto (`docker info` shows each node's status)")
        headers = {"X-Registry-Auth": auth} if auth else {}
        opened = await asyncio.gather(
            *(open_pull(e, params, headers) for e in engines), return_exceptions=True
        )
        started = [
            (e, r) for e, r in zip(engines, opened, strict=True) if isinstance(r, aiohttp.ClientResponse)
        ]
        refused = {e.node: r for e, r in zip(engines, opened, strict=True) if isinstance(r, BaseException)}
        if not started:
            first = next(iter(refused.values()))
            message = pull_error({n: _message(r) for n, r in refused.items()}, len(engines))
            if isinstance(first, EngineError):
                raise EngineError(first.status, message, first.node)
            raise Unavailable(message)
        lines = self._progress(started, {n: _message(r) for n, r in refused.items()}, len(engines))
        await anext(lines)  # into its try: from here its aclose() lets go of every engine's stream
        return lines

    async def _progress(
        self, started: list[tuple[Engine, aiohttp.ClientResponse]], errors: dict[str, str], nodes: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(PULL_BUFFER)

        async def one(e: Engine, r: aiohttp.ClientResponse) -> None:
            try:
                async for msg in read_pull(r, e.node):
                    await queue.put(node_line(msg, e.node))
            except ShoalError as err:
                errors[e.node] = err.message

        async def every() -> None:
            await asyncio.gather(*(one(e, r) for e, r in started))
            await queue.put(None)

        done = asyncio.ensure_future(every())
        try:
            yield {}  # primed by `pull`, never sent
            while (msg := await queue.get()) is not None:
                yield msg
            if errors:
                yield error_line(pull_error(dict(sorted(errors.items())), nodes))
        finally:
            done.cancel()
            for _, r in started:
                r.close()  # a pull the client gave up on: the engines' streams end with it
            await self.m.cluster.changed({"images"}, nodes=[e.node for e, _ in started])

    async def ensure_image(self, node: str, image: str) -> None:
        """Before a create on `node`: pulls `image` there if the node lacks it (as classic Swarm did). The
        node itself is asked (the cache may lag); a pull that fails is NotFound with the registry's error."""
        e = self.m.cluster.engine(node)
        try:
            await e.call("GET", path("/images", image) + "/json")
            return
        except EngineError as err:
            if err.status != 404:
                raise
        repo, tag = split_ref(image)
        try:
            r = await open_pull(e, {"fromImage": repo, "tag": tag}, {})
            async for _ in read_pull(r, node):
                pass
        except ShoalError as err:
            raise NotFound(f"No such image: {image} (pull failed on {node}: {err.message})") from None
        await self.m.cluster.changed({"images"}, nodes=[node])

    def _holding_repo(self, repo: str) -> list[str]:
        """Nodes holding any tag of `repo` (`docker push --all-tags`)."""
        return [
            e.node
            for e in self.m.cluster.engines.values()
            if any(t.rpartition(":")[0] == repo for i in e.images for t in i.get("RepoTags") or [])
        ]

    async def push_route(self, name: str, tag: str) -> Route:
        """`docker push` through the manager: from one node that holds the image (one that answers first),
        its output streamed back as the engine writes it."""
        ref = f"{name}:{tag}" if tag else name
        holders = await self.m.cluster.image_holders(ref) if tag else self._holding_repo(name)
        if not holders:
            raise NotFound(
                f"No such image: {ref} (no node holds it; tag an image with that name first: "
                f"docker tag IMAGE {ref})"
            )
        c = self.m.cluster
        node = next((n for n in holders if c.engine(n).reachable), holders[0])
        return Route(c.engine(node), path("/images", name) + "/push")

    def import_route(self, query: Mapping[str, str]) -> Route:
        """`docker import` (POST /images/create?fromSrc=...) onto one node the scheduler picks: dockerd
        stamps the import's time into the image, so importing on every node would make one tag three image
        ids; on one node it is one image, which containers then follow there (image affinity) and
        `docker push` publishes for every other node to pull."""
        if not query.get("fromSrc"):
            raise BadRequest("POST /images/create needs fromImage (a pull) or fromSrc (an import)")
        p = self.m.place(ContainerSpec())
        if p.node is None:
            raise NoPlacement(p)
        return Route(self.m.cluster.engine(p.node), "/images/create")

    async def imported(self, node: str) -> None:
        await self.m.cluster.changed({"images"}, nodes=[node])
