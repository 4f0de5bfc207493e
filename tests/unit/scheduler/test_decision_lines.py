"""`shoal why` renders a recorded decision (pure `decision_lines`): the counts, and the scores as a table."""

from __future__ import annotations

from shoal.cli.why import decision_lines
from shoal.scheduler.expr import parse
from shoal.scheduler.index import ClusterIndex
from shoal.scheduler.model import ContainerRef, ContainerSpec, NodeState
from shoal.scheduler.place import place

GiB = 1 << 30


def _record(p) -> dict:
    return {
        "name": "web",
        "request": {"image": "busybox", "expressions": list(p.expressions)},
        "placement": p.to_dict(),
    }


def test_why_prints_each_ranked_node_as_a_row_of_named_scores():
    ix = ClusterIndex(
        [
            NodeState(name="node1", gathered_at=1.0, cpus=2, memory=4 * GiB, facts={"load": 90}),
            NodeState(name="node2", gathered_at=1.0, cpus=2, memory=4 * GiB, reserved_memory=GiB),
            NodeState(
                name="node3", gathered_at=1.0, cpus=2, memory=4 * GiB, containers=(ContainerRef("c", "c"),)
            ),
        ]
    )
    p = place(ContainerSpec(constraints=(parse("constraint", "load!=90"),), memory=GiB), ix, 1.0)
    lines = decision_lines(_record(p))
    assert lines[0] == "web → node3"
    assert "  removed: constraint:load!=90 1" in lines
    assert "  ✗ node1  [constraint] load=90 (needs !=90)" in lines
    i = lines.index("  ranks (spread, higher wins):")
    assert lines[i + 1 :] == [
        "    node3  spread 0.75 ×1 → 0.75  (ties: containers 0.50)",
        "    node2  spread 0.50 ×1 → 0.50  (ties: containers 1.00)",
    ]
    assert not any("e-0" in line for line in lines)


def test_a_decision_recorded_before_named_scores_still_renders():
    old = {
        "placement": {"node": "node1", "strategy": "spread", "scores": [{"node": "node1", "score": 1e-06}]}
    }
    assert decision_lines(old)[-1] == "    node1  1e-06"
