"""Image-making operations: `docker build` on a node the scheduler chooses, `docker commit` on the
container's node; after either, the cache learns the new image.

A build is placed as classic Swarm placed it (cluster/swarm/cluster.go BuildImage): the build args
`constraint:...` / `affinity:...` (as `docker build --build-arg constraint:node==node2` sends them, key
`constraint:node`, value `=node2`) and the `memory` / `cpushares` of the query make a ContainerSpec for
the scheduler, and the engine gets the build args without them (dockerd would otherwise warn that they
"were not consumed"). The context streams to the chosen engine unchanged and is never held whole: only
its first bytes (at most PEEK) are looked through for the Dockerfile, whose FROM images
become a hidden soft affinity to the nodes holding them (`from_images`), so a build from a base image only
some nodes have lands on one of them and needs no pull; a Dockerfile further in is simply not seen.
"""

from __future__ import annotations

import io
import json
import logging
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shoal.cluster.state import tagged
from shoal.errors import BadRequest, NoPlacement
from shoal.logs import kv
from shoal.manager.decisions import decision_record
from shoal.manager.service import Route
from shoal.scheduler.expr import Expr, parse, parse_env
from shoal.scheduler.model import ContainerSpec

if TYPE_CHECKING:
    from shoal.manager.service import Manager

log = logging.getLogger("shoal.manager")
SCHEDULING = ("constraint:", "affinity:")
PEEK = 1 << 20  # how much of a context is looked through for its Dockerfile (the CLI sends it early)
_UNREADABLE = (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError)
_UNSET = "\x00"  # what an ARG without a value leaves in a FROM: that image is not known here
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
COMMIT_TIMEOUT = 600.0  # a commit writes the container's whole diff as a layer: minutes for a big one
BUILDKIT = (
    "BuildKit builds (version=2) need the engine's /session and /grpc endpoints, which the shoal manager "
    "does not relay; build through the manager with the classic builder (DOCKER_BUILDKIT=0), or with "
    "BuildKit on one node directly (docker -H $SHOAL_NODE_NODE1 build ...)"
)


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """What a build asks of the scheduler, and the query the engine gets (the scheduling args taken out)."""

    spec: ContainerSpec
    query: tuple[tuple[str, str], ...]
    tags: tuple[str, ...] = ()
    dockerfile: str = "Dockerfile"  # its path in the context
    args: Mapping[str, str | None] = field(default_factory=dict)  # the build args the engine gets


def build_args(raw: str) -> dict[str, str | None]:
    """The `buildargs` query value: a JSON object of strings (null: an arg the client had no value for)."""
    if not raw:
        return {}
    try:
        args = json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"error reading build args: {e}") from None
    if not isinstance(args, dict) or not all(isinstance(v, str | None) for v in args.values()):
        raise BadRequest("error reading build args: buildargs must be a JSON object of strings")
    return args


def _whole(query: Mapping[str, str], key: str) -> int:
    raw = query.get(key, "") or "0"
    try:
        n = int(raw)
    except ValueError:
        raise BadRequest(f"invalid {key} {raw!r}: a whole number") from None
    if n < 0:
        raise BadRequest(f"invalid {key} {raw!r}: must not be negative")
    return n


def scheduling_exprs(args: Mapping[str, str | None]) -> tuple[list[Expr], list[Expr], dict[str, str | None]]:
    """Constraints and affinities out of the build args (each arg read back as the `KEY=VALUE` the user
    wrote, as classic Swarm read them as a container's Env), and the args left for the engine."""
    env = [k if v is None else f"{k}={v}" for k, v in args.items() if k.startswith(SCHEDULING)]
    _, constraints, affinities = parse_env(env)
    rest = {k: v for k, v in args.items() if not k.startswith(SCHEDULING)}
    return constraints, affinities, rest


def build_plan(query: Iterable[tuple[str, str]]) -> BuildPlan:
    """A POST /build query read once (pure)."""
    items = list(query)
    single = {k: v for k, v in items}
    if single.get("version", "") not in ("", "1"):
        raise BadRequest(BUILDKIT)
    constraints, affinities, rest = scheduling_exprs(build_args(single.get("buildargs", "")))
    spec = ContainerSpec(
        name="",
        image="",
        constraints=tuple(constraints),
        affinities=tuple(affinities),
        memory=_whole(single, "memory"),
        cpus=_whole(single, "cpushares") / 1024,
    )
    out: list[tuple[str, str]] = []
    for k, v in items:
        if k == "buildargs":
            if rest:
                out.append((k, json.dumps(rest)))
        else:
            out.append((k, v))
    tags = tuple(v for k, v in items if k == "t")
    return BuildPlan(spec, tuple(out), tags, single.get("dockerfile") or "Dockerfile", rest)


def _member_name(name: str) -> str:
    return name.removeprefix("./").lstrip("/")


def dockerfile_in(head: bytes, name: str) -> str | None:
    """The Dockerfile's text if the context's first bytes `head` (a tar, plain or compressed, as the
    engine reads it) hold all of it; None when it is not (yet) there (pure)."""
    want = _member_name(name)
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|*") as tar:
            for member in tar:
                if member.offset_data + member.size > PEEK:  # past what is looked at (bounds what a
                    return None  # compressed head may expand to: never more than PEEK is unpacked)
                if _member_name(member.name) == want and member.isfile():
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    if len(data) != member.size:
                        return None
                    return data.decode("utf-8", errors="replace")
    except _UNREADABLE:
        return None
    return None


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, rest) pairs: comments dropped, `\\` continuations joined."""
    joined = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not joined and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        joined += line
        word, _, rest = joined.partition(" ")
        joined = ""
        yield word.upper(), rest.strip()


def from_images(text: str, args: Mapping[str, str | None]) -> tuple[str, ...]:
    """The images a Dockerfile builds FROM (pure): `ARG`s before the first FROM substituted from the build
    args or their defaults; `scratch`, earlier stages' names and anything left unresolved are skipped."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    seen_from = False
    for word, rest in _instructions(text):
        if word == "ARG" and not seen_from:
            key, eq, default = rest.partition("=")
            given = args.get(key.strip())
            if given is not None:
                values[key.strip()] = given
            elif eq:
                values[key.strip()] = default.strip().strip('"')
        elif word == "FROM":
            seen_from = True
            parts = [p for p in rest.split() if not p.startswith("--")]
            if not parts:
                continue
            image = _VAR.sub(lambda m: values.get(m.group(1) or m.group(2), _UNSET), parts[0])
            known = _UNSET not in image and "$" not in image
            if known and image.lower() != "scratch" and image.lower() not in stages:
                found.append(image)
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2].lower())
    return tuple(dict.fromkeys(found))


def commit_query(query: Iterable[tuple[str, str]], container_id: str) -> list[tuple[str, str]]:
    """The commit's query for the engine: the container named by its full id there (a `node/name` or a
    name the manager resolved means nothing to the engine), everything else as the client sent it."""
    return [(k, container_id if k == "container" else v) for k, v in query]


class Build:
    """Built per request (`Build(manager_of(request))`): it keeps no state of its own."""

    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def from_affinities(self, plan: BuildPlan, head: bytes) -> tuple[Expr, ...]:
        """Soft affinities to the nodes holding the FROM images, for each one only some nodes hold (one
        that every node holds or none does says nothing about where to build)."""
        text = dockerfile_in(head, plan.dockerfile) if head else None
        if text is None:
            return ()
        c = self.m.cluster
        out = []
        for image in from_images(text, plan.args):
            holders = c.nodes_with_image(image)
            if holders and set(holders) != set(c.engines):
                out.append(parse("affinity", f"image==~{tagged(image)}"))
        return tuple(out)

    async def place(self, query: Iterable[tuple[str, str]], head: bytes = b"") -> tuple[Route, BuildPlan]:
        """Where the build runs, and the query to send there; `head` is the context's first bytes (for its
        Dockerfile's FROM). An impossible constraint is the scheduler's refusal with its reasons, as
        `docker run` gets it."""
        c = self.m.cluster
        plan = build_plan(query)
        spec = replace(
            plan.spec,
            constraints=(*plan.spec.constraints, *self.m.reschedule.exclusions()),
            affinities=(*plan.spec.affinities, *self.from_affinities(plan, head)),
        )
        p = self.m.place(spec)
        if p.node is None:  # the cache may lag a node that just came back: look again, once
            await c.look_again()
            p = self.m.place(spec)
        name = plan.tags[0] if plan.tags else ""
        if p.node is None:
            record = decision_record(name, spec, p, c.now())
            self.m.decisions.refused(record)
            kv(log, "no placement", what="build", decision=record["id"], tag=name or None,
               reason=p.error().splitlines()[-1])  # fmt: skip
            raise NoPlacement(p)
        kv(log, "build placed", node=p.node, tag=name or None, candidates=p.candidates,
           filters=",".join(f"{f}:{n}" for f, n in p.steps))  # fmt: skip
        return Route(c.engine(p.node), "/build"), plan

    def building(self, node: str) -> None:
        """The build on `node` ended (or its client went away): its images are listed again."""
        self.m.cluster.mark(node, {"images"})

    async def built(self, node: str) -> None:
        """After a build's answer: the cache has the new image (waited for a bounded while)."""
        await self.m.cluster.changed({"images"}, [node])

    async def commit(self, query: Iterable[tuple[str, str]], body: bytes) -> dict[str, Any]:
        """`docker commit` on the container's node; the reply comes once the cache knows the image, so a
        `docker run` of it right after is placed there."""
        items = list(query)
        found = await self.m.containers.locate(dict(items).get("container", ""))
        created = await found.engine.call(
            "POST",
            "/commit",
            params=commit_query(items, found.id),
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=COMMIT_TIMEOUT,
        )
        await self.m.cluster.changed({"images"}, [found.node])
        kv(log, "committed", container=found.id[:12], node=found.node, image=(created or {}).get("Id"))
        return created
