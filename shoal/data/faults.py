"""Crash points for tests: an agent or the manager dies where a test names, as kill -9 would.

`SHOAL_MOVE_CRASH_AT=POINT` (several: comma-separated) makes the process `os._exit(137)` the first time it
reaches POINT. Tests start an agent or the manager with it, run a move, and prove after a restart that the
dataset still has exactly one writable copy (shoal.data.moves) and that the move was finished or undone.
Unset (always, outside tests) it costs one comparison.

Agents: `send-mid` (a send's first bytes are out), `send-final-mid` (the same, of a move's final
increment only), `receive-mid` (a receive's first bytes are in), `receive-final-mid` (the same, of a
move's final increment only), `receive-done` (a copy is in place, the pull not yet answered),
`promote-mid` (the pool's record says promoting, the writable copy not yet made), `demote-mid` (the record
says replica, the copy not yet put away). The `-final-` points exist because a target's replica loop and
the move's copy phase pull a varying number of times before the final pull, so an occurrence count cannot
name it. Manager: `move-started` (the move record is written, nothing pulled yet), `move-copied` (the full
copy is on the target), `move-final` (phase final written, the containers stopped), `move-pulled` (the
last increment is on the target, not yet fenced), `move-fenced` (the fence committed, the containers not
yet created on the target).
"""

from __future__ import annotations

import os

_POINTS = frozenset(p for p in os.environ.get("SHOAL_MOVE_CRASH_AT", "").split(",") if p)


def crash_point(point: str) -> None:
    if _POINTS and point in _POINTS:
        os._exit(137)
