"""consume(): the chosen node with the container on it and its resources reserved; the next decision
sees it."""

from __future__ import annotations

from shoal.scheduler.consume import consume
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place

GiB = 1 << 30


def test_consume_adds_the_container_and_reserves_its_cpus_and_memory():
    before = NodeState(
        name="node1", cpus=4, memory=8 * GiB, reserved_cpus=1.0, reserved_memory=GiB, facts={"a": 1}
    )
    ref = ContainerRef("c1", "web", "busybox", {"tier": "front"}, ((80, "tcp"),))
    after = consume(before, ContainerSpec(memory=2 * GiB, cpus=1.5), ref)
    assert after.containers == (ref,)
    assert (after.reserved_cpus, after.reserved_memory) == (2.5, 3 * GiB)
    assert before.containers == () and before.reserved_memory == GiB  # pure: the old state is untouched
    assert after.facts is before.facts and after.name == "node1"


def test_the_next_decision_sees_what_was_consumed():
    ix = ClusterIndex([NodeState(name="node1", gathered_at=1.0, cpus=2, memory=4 * GiB)])
    big = ContainerSpec(memory=3 * GiB, ports=((80, "tcp"),))
    assert place(big, ix, 1.0).node == "node1"
    ix.upsert(consume(ix.nodes[0], big, ContainerRef("c1", "web", ports=((80, "tcp"),))))
    p = place(big, ix, 1.0)
    assert p.node is None
    assert str(p.rejected[0]) == "node1 port 80/tcp (Host mode) is in use"
    p = place(ContainerSpec(memory=2 * GiB), ix, 1.0)
    assert str(p.rejected[0]) == "node1 memory 2048M > free 1024M"
    assert dict(p.by_reason) == {"resources:memory": 1}
