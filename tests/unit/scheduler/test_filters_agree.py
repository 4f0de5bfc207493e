"""Every filter's vectorised clauses (the fast path) agree with its per-node `check` (the meaning), on
generated clusters and requests: the same nodes pass, and for each node that fails, the first clause it
fails carries the key of the Reason `check` gives, so the per-reason counts are the checks' counts.
The index is also changed after its masks were cached (a container placed, facts changed, health
lost), so the incrementally kept masks are held to the meaning as well."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import BadRequest
from shoal.scheduler.consume import consume
from shoal.scheduler.expr import Expr, parse
from shoal.scheduler.filters import Context, default_filters, mask
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place
from shoal.scheduler.values import HOST_PORTS_LABEL, SLOTS_LABELS

NOW = 1_000_000.0
GiB = 1 << 30
NAMES = ("db", "web-1", "web-2", "MySQL", "ab", "x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaax")
IDS = ("c1", "c2", "c3", "c4", "deadbeef")
LABEL_KEYS = ("tier", "app", "com.example.role")
LABEL_VALUES = ("front", "back", "web", "", "a\nb", "Debian GNU/Linux")
IMAGES = ("redis:latest", "busybox", "sha256:abc", "web:1")
PORTS = ((80, "tcp"), (443, "tcp"), (53, "udp"))
VOLUMES = ("data", "logs", "fresh")
NETWORKS = ("app", "db_net", "nowhere")
DRIVERS = ("local", "flocker", "shoal")
FACT_KEYS = ("k1", "k2", "system_overload_10min", "virtual", "zone")
NODE_LABEL_KEYS = ("zone", "disk", "operatingsystem", "k3")
SLOT_VALUES = ("0", "1", "2", "3", " 2", "x", "")  # classic Swarm ignores a value that is not a number
HOST_PORTS = ('["80/tcp"]', '["53/udp", "443/tcp"]', "[]", "not json", '["x/tcp"]')
HEALTH = ("passing", "passing", "critical", "warning", "unknown")

fact_values = st.one_of(
    st.integers(-5, 120),
    st.sampled_from([0.5, 3.5, 25.0, 1e16, math.nan, math.inf, True, False]),
    st.sampled_from(["a", "ab", "kvm", "KVM", "10", "025", "Debian", "x\ny", "", "true"]),
)
containers = st.builds(
    ContainerRef,
    id=st.sampled_from(IDS),
    name=st.sampled_from(NAMES),
    image=st.sampled_from(IMAGES),
    labels=st.builds(
        lambda a, b: a | b,
        st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2),
        st.dictionaries(st.just(HOST_PORTS_LABEL), st.sampled_from(HOST_PORTS), max_size=1),
    ),
    ports=st.lists(st.sampled_from(PORTS), max_size=2, unique=True).map(tuple),
    running=st.booleans(),
)


@st.composite
def node_states(draw: st.DrawFn, name: str) -> NodeState:
    cpus = draw(st.sampled_from([0.0, 1.0, 2.0, 4.0]))
    memory = draw(st.sampled_from([0, GiB, 4 * GiB]))
    return NodeState(
        name=name,
        id=draw(st.sampled_from(["", f"id-{name}"])),
        health=draw(st.sampled_from(HEALTH)),
        gathered_at=NOW - draw(st.sampled_from([0.0, 1.0, 29.5, 30.0, 30.5, 300.0])),
        facts=draw(st.dictionaries(st.sampled_from(FACT_KEYS), fact_values, max_size=4)),
        labels=draw(
            st.dictionaries(st.sampled_from(NODE_LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)
        )
        | draw(st.dictionaries(st.sampled_from(SLOTS_LABELS), st.sampled_from(SLOT_VALUES), max_size=2)),
        cpus=cpus,
        memory=memory,
        reserved_cpus=draw(st.sampled_from([0.0, 0.5, cpus])),
        reserved_memory=draw(st.sampled_from([0, memory // 2, memory, memory + 1])),
        containers=tuple(draw(st.lists(containers, max_size=4))),
        images=frozenset(draw(st.lists(st.sampled_from(IMAGES), max_size=3))),
        volume_drivers=frozenset(draw(st.lists(st.sampled_from(DRIVERS), min_size=0, max_size=3))),
        volumes=frozenset(draw(st.lists(st.sampled_from(VOLUMES[:2]), max_size=2))),
        networks=frozenset(draw(st.lists(st.sampled_from(NETWORKS[:2]), max_size=2))),
    )


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeState]:
    n = draw(st.integers(1, 8))
    return [draw(node_states(f"n{i}")) for i in range(n)]


CONSTRAINT_VALUES = (
    "a", "ab", "a*", "*b", "*", "kvm", "10", "25", "0.5", "n1", "id-n2", "true", "True", "Debian*",
    "/^a/", "/b$/", "/[0-2][0-5]/", "/(?i)KVM/", "/^$/", "/x*/", r"/\A(a|b)\z/", "/(?s:.)y/", "/^y/",
    "/n[0-3]/", r"/^\d+$/", "/Debian|Ubuntu/",
)  # fmt: skip
AFFINITY_VALUES = (
    *NAMES, *IDS, *IMAGES, "front", "web", "web*", "*", "redis*", "/^web/", r"/^(\w|\w)+x$/", "/b$/",
    "/^$/", r"/\Adb\z/", "/./", "/^a\nb$/", "/(?m)^b/", "/Debian/",
)  # fmt: skip


def _expr(kind: str, text: str) -> Expr | None:
    try:
        return parse(kind, text)
    except BadRequest:
        return None


NUMBERS = ("10", "25", "0.5", "-1", "1e16", "0")


@st.composite
def constraint_exprs(draw: st.DrawFn) -> Expr | None:
    key = draw(st.sampled_from((*FACT_KEYS, *NODE_LABEL_KEYS, "node", "nokey")))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    value = draw(st.sampled_from(NUMBERS if op not in ("==", "!=") else CONSTRAINT_VALUES))
    return _expr("constraint", f"{key}{op}{'~' if draw(st.booleans()) else ''}{value}")


affinity_exprs = st.builds(
    lambda k, op, soft, v: _expr("affinity", f"{k}{op}{'~' if soft else ''}{v}"),
    st.sampled_from(("container", "image", *LABEL_KEYS)),
    st.sampled_from(["==", "!="]),
    st.booleans(),
    st.sampled_from(AFFINITY_VALUES),
)


def _present(xs: list[Expr | None]) -> tuple[Expr, ...]:
    return tuple(x for x in xs if x is not None)


requests = st.builds(
    ContainerSpec,
    constraints=st.lists(constraint_exprs(), max_size=3).map(_present),
    affinities=st.lists(affinity_exprs, max_size=2).map(_present),
    ports=st.lists(st.sampled_from(PORTS), max_size=2, unique=True).map(tuple),
    memory=st.sampled_from([0, 0, 512 << 20, 2 * GiB]),
    cpus=st.sampled_from([0.0, 0.0, 0.5, 2.0]),
    depends_on=st.lists(st.sampled_from((*NAMES[:3], *IDS[:2], "ghost")), max_size=2, unique=True).map(tuple),
    volume_driver=st.sampled_from(["", "", "local", "flocker"]),
    volumes=st.lists(st.sampled_from(VOLUMES), max_size=2, unique=True).map(tuple),
    networks=st.lists(st.sampled_from(NETWORKS), max_size=2, unique=True).map(tuple),
)


PLACED = ContainerRef("c9", "web-9", "busybox", {"tier": "front"}, ((80, "tcp"),))
# what happens to a node in a moment of cluster life: a container placed on it (facts kept as they were),
# new facts and nothing else (an agent's publish: the index re-reads only the facts that changed, and
# a change of type, 1 to True, is a change), or anything at all (a freshly drawn node under that name)
new_facts = st.dictionaries(st.sampled_from(FACT_KEYS), fact_values, max_size=5)
changes = st.lists(
    st.tuples(st.integers(0, 7), st.one_of(st.just("placed"), new_facts, node_states("(name)"))), max_size=4
)


def _changed(node: NodeState, change: str | dict | NodeState) -> NodeState:
    if change == "placed":
        return consume(node, ContainerSpec(memory=256 << 20, cpus=0.5), PLACED)
    if isinstance(change, dict):
        return replace(node, facts=change)  # the same labels object: the facts-only path
    assert isinstance(change, NodeState)
    return replace(change, name=node.name)


def assert_agree(ix: ClusterIndex, spec: ContainerSpec, ttl: float) -> None:
    for soft in (True, False):
        ctx = Context(now=NOW, fact_ttl=ttl, soft=soft, cluster=ix)
        for f in default_filters():
            clauses = f.clauses(ix, spec, ctx)
            m = mask(f, ix, spec, ctx)
            for j, node in enumerate(ix.nodes):
                r = f.check(node, spec, ctx)
                passes = True if m is None else bool(m[j])
                assert passes == (r is None), (f.name, node, spec, r)
                if r is not None:
                    first = next(key for key, c in clauses if not c[j])
                    assert first == r.key, (f.name, node, r)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=clusters(),
    spec=requests,
    ttl=st.sampled_from([30.0, 5.0]),
    changed=changes,
)
def test_every_filters_mask_agrees_with_its_check_on_every_node(nodes, spec, ttl, changed):
    ix = ClusterIndex(nodes)
    assert_agree(ix, spec, ttl)  # masks are now cached ...
    for j, change in changed:  # ... and must follow the nodes as they change
        if j < len(ix):
            ix.upsert(_changed(ix.nodes[j], change))
    ix.upsert(NodeState(name="late", gathered_at=NOW, cpus=2, memory=4 * GiB))  # a node joins
    assert_agree(ix, spec, ttl)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=clusters(), spec=requests)
def test_counts_are_the_checks_counts(nodes, spec):
    ix = ClusterIndex(nodes)
    p = place(spec, ix, NOW)
    assert sum(n for _, n in p.by_reason) == p.rejected_total == sum(n for _, n in p.filtered)
    assert p.rejected_total + (len(ix) - p.rejected_total) == p.candidates
    ctx = Context(now=NOW, soft=not p.soft_dropped, cluster=ix)
    by_filter = {f.name: f for f in default_filters()}
    counted = dict(p.by_reason)
    for r in p.rejected:
        reason = by_filter[r.filter].check(ix.get(r.node), spec, ctx)
        assert reason == r.reason and str(r) == f"{r.node} {reason.detail}"
        assert counted[reason.key] >= 1
    assert (p.node is None) == (p.rejected_total == len(ix))


def test_a_fact_that_changes_type_alone_is_seen_by_the_index():
    """1 == True == 1.0 to Python, not to a constraint ("1" is not "true"): a publish that changes a fact's
    type and nothing else must reach the index's strings as a whole rebuild would."""
    labels = {"zone": "a"}
    ix = ClusterIndex([NodeState(name="n1", gathered_at=NOW, facts={"k1": 1, "k2": 2}, labels=labels)])
    for value, matches in ((True, "true"), (1.0, "1"), (1, "01"), ("x", "x")):
        ix.upsert(replace(ix.nodes[0], facts={"k1": value, "k2": 2}))
        for expr, want in ((f"k1=={matches}", True), ("k1==nothing", False)):
            spec = ContainerSpec(constraints=(parse("constraint", expr),))
            assert_agree(ix, spec, 30.0)
            assert bool(place(spec, ix, NOW).node) == want, (value, expr)
