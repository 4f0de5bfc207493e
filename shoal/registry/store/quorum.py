"""Whether an etcd cluster can serve a linearizable request, decided from what its members said just now.

etcd without quorum does not refuse: a member that still believes in a leader waits out its request
timeout (seconds), and one that knows it has none answers "no leader", which is also what it says for
the second or so of an ordinary election. Neither tells a client "give up now" from "wait a moment".
Counting the members that answer a Status call does: fewer than a majority of the voting members means
no write can commit until members come back, so the store says so at once (and reads fall back to a
member's own copy, marked stale); a majority that answers is an election in progress, worth waiting for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """A voting etcd member: its id (0 when not known: no member answered the member list), its name
    and its client endpoint (host:port)."""

    id: int
    name: str
    endpoint: str

    def label(self) -> str:
        return (
            f"{self.name} at {self.endpoint}" if self.name and self.name != self.endpoint else self.endpoint
        )


@dataclass(frozen=True, slots=True)
class Quorum:
    """The members, the ones that answered, and the leader one of them named (0: none knows one)."""

    members: tuple[Member, ...]
    up: tuple[Member, ...]
    leader: int

    @property
    def need(self) -> int:
        return len(self.members) // 2 + 1

    @property
    def has_quorum(self) -> bool:
        return len(self.up) >= self.need

    @property
    def down(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m not in self.up)

    @property
    def serving(self) -> bool:
        """Quorum and a leader: linearizable requests can be answered again."""
        return self.has_quorum and self.leader != 0


def endpoint_of(url: str) -> str:
    """host:port of a client URL ("http://10.99.20.11:2379" -> "10.99.20.11:2379")."""
    return url.split("://", 1)[-1].rstrip("/")


def assess(
    endpoints: Sequence[str], members: Sequence[Member] | None, answers: Mapping[str, tuple[int, int]]
) -> Quorum:
    """The verdict from one round of Status calls: `answers[endpoint] = (member id, leader id)` for every
    endpoint that answered; `members` from the member list (None when nobody gave one: then the
    configured endpoints are taken as the whole cluster, each its own member)."""
    if not members:
        members = [Member(0, e, e) for e in endpoints]
    ids = {mid for mid, _ in answers.values()}
    answered = set(answers)
    up = tuple(m for m in members if (m.id and m.id in ids) or m.endpoint in answered)
    # a leader counts only while it answers itself: a follower names a dead leader until its election
    # timeout passes
    leaders = [leader for _, leader in answers.values() if leader and leader in ids]
    return Quorum(tuple(members), up, leaders[0] if leaders else 0)


def no_quorum_message(q: Quorum) -> str:
    """What a refused write says: that etcd lost its quorum, which members are down, and the way out."""
    down = ", ".join(m.label() for m in q.down) or "none"
    return (
        f"etcd has no quorum: {len(q.up)} of its {len(q.members)} members answer and a write needs "
        f"{q.need} (not answering: {down}); nothing can be written until enough of them are back. Start "
        "the members that are down (each keeps its data on its own disk); writes resume once a majority "
        "answers, and reads meanwhile come from a surviving member's copy, possibly stale"
    )
