"""The fence, proven over every interleaving hypothesis finds: moves (begin, pulls, final, fence, resume
after a manager restart), replica pulls and promotions, the agents' convergence (the real `plan`, one step
at a time, its registry writes compared on the index it read) and crashes of any node at any point. After
every step: at most one copy is writable (`serves_writable`, the plugin's own rule) and some node still
holds the data; a move's promoted copy holds every write made before the fence; once everything is up and
has converged, exactly one copy is writable, on the node the record names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from shoal import keys
from shoal.data.model import Dataset
from shoal.data.moves import (
    COPY,
    FINAL,
    Move,
    Replicas,
    begin_ops,
    copy_name,
    fence_ops,
    parse_move,
    promotion_ops,
    replica_plan,
    resume,
    serves_writable,
    to_prune,
)
from shoal.data.plan import Cluster, OnDisk, PoolState, plan

NODES = ("n1", "n2", "n3")
ID = str(uuid.UUID(int=7))


@dataclass
class Node:
    """One node's pool, as far as the fence is concerned."""

    role: str | None = None  # owner | replica | promoting | None (holds nothing)
    epoch: int = 0
    live: bool = False  # datasets/<id> exists (the copy a container mounts)
    version: int = 0  # the writes the live copy holds
    copies: dict[str, int] = field(default_factory=dict)  # transfer snapshot -> the writes it holds
    alive: bool = True
    read: Cluster | None = None  # a convergence round that has read the registry and not yet applied


class Registry:
    """The registry's KV with modify indexes and all-or-nothing transactions (Consul's txn semantics)."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[object, int]] = {}
        self.index = 1

    def txn(self, ops: list[dict]) -> bool:
        for op in ops:
            have = self.kv.get(op["Key"])
            now = have[1] if have else 0
            if op["Verb"] in ("cas", "check-index") and now != op["Index"]:
                return False
        for op in ops:
            if op["Verb"] in ("cas", "set"):
                self.index += 1
                self.kv[op["Key"]] = (op["Value"], self.index)
            elif op["Verb"] == "delete":
                self.kv.pop(op["Key"], None)
        return True

    def get(self, key: str) -> tuple[object, int]:
        return self.kv.get(key, (None, 0))


class FenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry()
        self.nodes = {n: Node() for n in NODES}
        d = Dataset(ID, "db", "gold", "n1", 0, "", "dataset", 1.0, "db@gold")
        self.reg.txn([{"Verb": "set", "Key": keys.dataset(ID), "Value": d.to_dict()}])
        self.nodes["n1"] = Node(OWNER_ROLE, 0, True)
        self.writes = 0  # every write acknowledged so far
        self.clock = 100.0
        self.stale: tuple | None = None  # what a replaced manager read: (record, index, move, index)
        self.failed_over = False  # a replica was promoted without its owner: writes since its copy are lost
        self.final_pulled = False  # the move's final pull answered (the manager fences only after it)
        self.stale_assigned: tuple[Replicas | None, int] = (None, 0)

    # --- reading the model ---------------------------------------------------------------------------

    def record(self) -> tuple[Dataset, int]:
        doc, index = self.reg.get(keys.dataset(ID))
        return Dataset.from_dict(doc), index

    def move(self) -> tuple[Move | None, int]:
        doc, index = self.reg.get(keys.move(ID))
        if doc is None:
            return None, 0
        got = parse_move(ID, doc)
        assert isinstance(got, Move), got
        return got, index

    def assigned(self) -> tuple[Replicas | None, int]:
        doc, index = self.reg.get(keys.replicas(ID))
        return (Replicas(ID, tuple(doc["nodes"])) if doc else None), index

    def writable(self) -> list[str]:
        d, _ = self.record()
        return [n for n, p in self.nodes.items() if p.live and serves_writable(d, n, p.role or "", p.epoch)]

    def pool_state(self, n: str) -> PoolState:
        p = self.nodes[n]
        d, _ = self.record()
        rec = replace(d, node="", epoch=p.epoch)
        copies = {ID: tuple(sorted(p.copies))} if p.copies else {}
        if p.role is None:
            return PoolState({}, copies=copies)
        if p.role == OWNER_ROLE:
            return PoolState({ID: OnDisk(ID, record=rec)}, copies=copies)
        state = "demoting" if p.role == "replica" and p.live else p.role
        disk = {ID: OnDisk(ID, record=rec)} if p.live and p.role == "promoting" else {}
        return PoolState(disk, replicas={ID: rec}, roles={ID: state}, copies=copies)

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    # --- the manager's moves --------------------------------------------------------------------------

    @rule(to=st.sampled_from(NODES))
    def begin_move(self, to: str) -> None:
        target = to
        d, index = self.record()
        if target == d.node or self.move()[0] is not None:
            return
        m = Move(ID, d.name, d.node, target, COPY, d.epoch, started=self.tick())
        if self.reg.txn(begin_ops(m, index, *self.assigned())):
            self.final_pulled = False

    def _pull(self, into: str, source: str, final: bool) -> None:
        """What a pull does, as the agents' code does it: the sender sends only its writable copy (and a
        final copy only in a move's final phase), the receiver keeps it as a replica."""
        d, _ = self.record()
        src, dst = self.nodes[source], self.nodes[into]
        if not (src.alive and dst.alive) or into == source:
            return
        if not (src.live and serves_writable(d, source, src.role or "", src.epoch)):
            return  # the sender refuses: it does not hold the writable copy
        m, _ = self.move()
        if final and (m is None or m.phase != FINAL or m.source != source):
            return
        if final:
            self.final_pulled = True
        if dst.role == OWNER_ROLE:
            return  # the receiver refuses: it holds its own writable copy
        assigned, _ = self.assigned()
        if assigned is None or into not in assigned.nodes:
            return  # the receiver refuses: it is not assigned a copy (every copy stays tracked)
        name = copy_name(d.epoch, self.tick())
        src.copies[name] = src.version
        dst.copies[name] = src.version
        if dst.role is None:
            dst.role, dst.epoch = "replica", d.epoch
        for pool in (src, dst):
            for old in to_prune(list(pool.copies), pinned=[name]):
                del pool.copies[old]

    @rule(final=st.booleans())
    def move_pull(self, final: bool) -> None:
        m, _ = self.move()
        if m is not None:
            self._pull(m.target, m.source, final)

    @rule()
    def move_final(self) -> None:
        m, index = self.move()
        if m is None or m.phase != COPY or not self.nodes[m.target].copies:
            return
        self.reg.txn([{"Verb": "cas", "Key": keys.move(ID), "Value": replace(m, phase=FINAL).to_dict(),
                       "Index": index}])  # fmt: skip

    @rule()
    def old_manager_fences(self) -> None:
        """A manager that was replaced (it hung, another started and undid or finished its move) wakes
        up and fences with what it read back then: the transaction must fail."""
        if self.stale is None:
            return
        d, rindex, m, mindex = self.stale
        self.stale = None
        if m is None or m.phase != FINAL:
            return
        try:
            _, ops = fence_ops(d, rindex, m, mindex, self.tick(), *self.stale_assigned)
        except Exception:
            return
        self.reg.txn(ops)

    @rule()
    def fence(self) -> None:
        m, mindex = self.move()
        d, rindex = self.record()
        if m is None or m.phase != FINAL:
            return
        if not self.final_pulled:
            return  # the manager fences only after the final pull answered
        try:
            _, ops = fence_ops(d, rindex, m, mindex, self.tick(), *self.assigned())
        except Exception:
            return
        self.reg.txn(ops)

    @rule(to=st.sampled_from(NODES))
    def manager_step(self, to: str) -> None:
        """The manager's next step of the protocol, whatever the state (most runs then reach the fence
        and beyond, with the interference rules falling between any two steps)."""
        m, _ = self.move()
        if m is None:
            self.begin_move(to)
        elif m.phase == COPY and not self.nodes[m.target].copies:
            self.move_pull(False)
        elif m.phase == COPY:
            self.move_final()
        elif m.phase == FINAL and not self.final_pulled:
            self.move_pull(True)
        elif m.phase == FINAL:
            self.fence()
        else:
            self.manager_restart()

    @rule(node=st.sampled_from(NODES))
    def agent_round(self, node: str) -> None:
        self.agent_read(node)
        for _ in range(4):
            self.agent_apply(node)

    @rule()
    def manager_restart(self) -> None:
        """A manager that starts finds the move record: undone before the fence, forward after it (the
        containers' part needs no model here: the record goes once the target promoted)."""
        m, index = self.move()
        if self.final_pulled:  # the manager being replaced had done its final pull
            self.stale = (*self.record(), m, index)
            self.stale_assigned = self.assigned()
        if m is None:
            return
        self.final_pulled = False
        if resume(m) == "undo" or (self.nodes[m.target].live and self.nodes[m.target].role == OWNER_ROLE):
            self.reg.txn([{"Verb": "delete", "Key": keys.move(ID), "Index": index}])

    # --- replicas and failover ----------------------------------------------------------------------

    @rule(node=st.sampled_from(NODES))
    def assign_replica(self, node: str) -> None:
        d, _ = self.record()
        have, index = self.reg.get(keys.replicas(ID))
        current = Replicas(ID, tuple(have["nodes"])) if have else None
        p = replica_plan(d, 1, current, NODES)
        nodes = p.keep or ((node,) if node != d.node else ())
        self.reg.txn([{"Verb": "cas", "Key": keys.replicas(ID), "Value": Replicas(ID, nodes).to_dict(),
                       "Index": index}])  # fmt: skip

    @rule()
    def replica_pull(self) -> None:
        have, _ = self.reg.get(keys.replicas(ID))
        d, _ = self.record()
        for n in have["nodes"] if have else ():
            self._pull(n, d.node, False)

    @rule()
    def promote_replica(self) -> None:
        """The manager's failover: the owner is down (its node not alive), a replica that answers and
        holds a copy becomes the writable one."""
        d, rindex = self.record()
        have, repindex = self.reg.get(keys.replicas(ID))
        if self.nodes[d.node].alive or not have:
            return
        ready = [n for n in have["nodes"] if self.nodes[n].alive and self.nodes[n].copies and n != d.node]
        if not ready:
            return
        others = tuple(n for n in have["nodes"] if n != ready[0])
        _, ops = promotion_ops(d, rindex, ready[0], Replicas(ID, (d.node, *others)), repindex)
        if self.reg.txn(ops):
            self.failed_over = True

    # --- the agents -----------------------------------------------------------------------------------

    @rule(node=st.sampled_from(NODES))
    def agent_read(self, node: str) -> None:
        """A convergence round reads the registry (and applies later: anything may happen between)."""
        p = self.nodes[node]
        if not p.alive:
            return
        d, index = self.record()
        have, _ = self.reg.get(keys.replicas(ID))
        p.read = Cluster({ID: d}, {d.name: ID}, replicas={ID: tuple(have["nodes"])} if have else {},
                         indexes={ID: index})  # fmt: skip

    @rule(node=st.sampled_from(NODES))
    def agent_apply(self, node: str) -> None:
        """The round's first step (one at a time, so a crash can fall between any two)."""
        p = self.nodes[node]
        if not p.alive or p.read is None:
            return
        steps = plan(node, p.read, self.pool_state(node), {}).steps
        step = next((s for s in steps if s.op in ("promote", "demote", "epoch", "publish")), None)
        if step is None:
            p.read = None
            return
        if step.op == "publish":  # compared on the index the round read
            assert step.record is not None
            self.reg.txn([{"Verb": "cas", "Key": keys.dataset(ID), "Value": step.record.to_dict(),
                           "Index": p.read.indexes.get(ID, 0)}])  # fmt: skip
            p.read = None
        elif step.op == "epoch":
            assert step.record is not None
            p.epoch = step.record.epoch
        elif step.op == "promote":
            assert step.record is not None
            if p.role != "promoting":
                p.role, p.epoch = "promoting", step.record.epoch  # the pool's record first
            else:
                if not p.live:
                    p.version = p.copies.get(step.source, p.version)
                p.live, p.role = True, OWNER_ROLE
        elif step.op == "demote":
            if p.role != "replica":
                p.role = "replica"  # the pool's record first: from here on the node serves nothing
            else:
                p.copies[f"old-e{p.epoch:06d}-{int(self.tick() * 1000):013d}"] = p.version
                p.live = False

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: str) -> None:
        self.nodes[node].alive = False
        self.nodes[node].read = None

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: str) -> None:
        self.nodes[node].alive = True

    @rule()
    def write(self) -> None:
        """A container writes to the dataset: only where it is writable, and not on a move's source past
        its copy phase (the plugin refuses mounts there; the manager stopped its containers)."""
        m, _ = self.move()
        for n in self.writable():
            if self.nodes[n].alive and not (m is not None and m.phase != COPY and m.source == n):
                self.writes += 1
                self.nodes[n].version = self.writes

    # --- what must always hold ----------------------------------------------------------------------

    @invariant()
    def at_most_one_writable_copy(self) -> None:
        assert len(self.writable()) <= 1, self.writable()

    @invariant()
    def every_copy_is_tracked(self) -> None:
        """Every node holding anything of the dataset is the one its record names or is in its replica
        assignment: the deletion chain (the record's node, then the assignment) reaches every copy."""
        d, _ = self.record()
        assigned, _ = self.assigned()
        tracked = {d.node, *(assigned.nodes if assigned else ())}
        holding = {n for n, p in self.nodes.items() if p.role is not None or p.live or p.copies}
        assert holding <= tracked, (holding, tracked)

    @invariant()
    def the_data_is_somewhere(self) -> None:
        assert any(p.live or p.copies for p in self.nodes.values())

    @invariant()
    def a_moved_copy_holds_every_write_before_its_fence(self) -> None:
        """Without a failover (which loses what the replica had not received: the RPO), the writable
        copy holds every acknowledged write."""
        w = self.writable()
        if w and not self.failed_over:
            assert self.nodes[w[0]].version == self.writes

    def teardown(self) -> None:
        """Everything up, the manager restarted, every agent converged: exactly one writable copy, on the
        node the record names."""
        for p in self.nodes.values():
            p.alive = True
        self.manager_restart()
        for _ in range(12):
            for n in NODES:
                self.agent_read(n)
                for _ in range(4):
                    self.agent_apply(n)
                    if self.nodes[n].read is None:
                        self.agent_read(n)
            self.manager_restart()
        d, _ = self.record()
        assert self.writable() == [d.node], (self.writable(), d, self.nodes)


OWNER_ROLE = "owner"
FenceMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=list(HealthCheck)
)
test_the_fence_holds_in_every_interleaving = FenceMachine.TestCase


def _check(m: FenceMachine) -> None:
    m.at_most_one_writable_copy()
    m.every_copy_is_tracked()
    m.the_data_is_somewhere()
    m.a_moved_copy_holds_every_write_before_its_fence()


def test_a_replaced_managers_late_fence_fails_and_loses_no_write():
    m = FenceMachine()
    for _ in range(4):  # begin, full copy, final phase, final pull
        m.manager_step("n2")
        _check(m)
    assert m.final_pulled
    m.manager_restart()  # another manager undoes the move; the source's containers start again
    assert m.move()[0] is None and m.writable() == ["n1"]
    m.write()
    m.old_manager_fences()  # the first manager wakes up with its old reads: its transaction fails
    m.agent_round("n2")
    m.agent_round("n2")
    _check(m)
    assert m.writable() == ["n1"] and m.record()[0].node == "n1"


def test_a_move_fences_once_and_the_old_copy_becomes_a_replica():
    m = FenceMachine()
    m.write()
    for _ in range(5):  # begin, full copy, final phase, final pull, fence
        m.manager_step("n2")
        _check(m)
    d, _ = m.record()
    assert d.node == "n2" and d.epoch == 1 and m.writable() == []  # fenced, not yet promoted
    m.agent_round("n2")
    m.agent_round("n1")
    _check(m)
    assert m.writable() == ["n2"] and m.nodes["n2"].version == m.writes
    assert m.nodes["n1"].role == "replica" and not m.nodes["n1"].live and m.nodes["n1"].copies


def test_a_failover_promotes_the_replica_and_the_old_owner_is_demoted_when_it_returns():
    m = FenceMachine()
    m.assign_replica("n3")
    m.write()
    m.replica_pull()
    m.crash("n1")
    m.promote_replica()
    assert m.record()[0].node == "n3" and m.record()[0].epoch == 1
    m.agent_round("n3")
    assert m.writable() == ["n3"]
    m.restart("n1")
    m.agent_round("n1")
    m.agent_round("n1")
    _check(m)
    assert m.nodes["n1"].role == "replica" and m.writable() == ["n3"]
