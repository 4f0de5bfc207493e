"""Placement, as pure functions of plain data (no I/O here):

- `expr.py` parses classic Swarm's expressions once, at the API edge; `pattern.py` compiles their
  `/regex/` and glob values with RE2 (linear time, length-capped);
- `model.py` holds the data: NodeState, ContainerSpec, and the decision (Placement, Reason, Score);
- `values.py` says what a node offers for a key, the meaning both the checks and the index read;
- `index.py` (ClusterIndex) indexes the nodes by value so a decision over 10,000 nodes is a few numpy
  operations;
- `filters/` one per module, each a per-node `check` returning a Reason (the meaning) and vectorised
  `clauses` (the fast path, held to `check` by a property test);
- `rankers/` named scores in 0..1; `strategy.py` weights them (spread, binpack, random, by name);
  `rank.py` orders the survivors and keeps each component;
- `place.py` runs it all: place(spec, index, now) -> Placement; `consume.py` takes the placement's
  resources on the chosen node, for the next decision.
"""
