"""Crash points for tests: the registry dies where a test names, as kill -9 would.

`SHOAL_REGISTRY_CRASH_AT=POINT` (optionally `POINT@KEYPREFIX`) makes the process `os._exit(137)` the
first time it reaches POINT (while writing a key under KEYPREFIX, when given). Tests use it to stop the
registry between the writes of one operation and then prove, after a restart, that the operation is all
there or not there at all. Unset (always, outside tests) it costs one comparison.

Points: `store-txn-mid` (SQLite: after the first write of a multi-write transaction, before the rest and
the commit), `store-txn-sent` (etcd: the transaction is on its way, its answer not yet read),
`session-create-granted` (the lease exists, the session record not yet), `session-destroy-committed`
(the session and its locks are gone, its lease not yet revoked).

`SHOAL_REGISTRY_LOSE_ANSWERS=1` makes the etcd store drop the answer to the first attempt of every
guarded write (applied, but unanswered, as when a deadline passes just after etcd commits), so tests
can prove that the retry that follows reports the write as done.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_POINT, _, _KEY = os.environ.get("SHOAL_REGISTRY_CRASH_AT", "").partition("@")
LOSE_ANSWERS = os.environ.get("SHOAL_REGISTRY_LOSE_ANSWERS") == "1"


def armed(point: str) -> bool:
    return bool(_POINT) and point == _POINT


def crash_point(point: str, keys: Iterable[str] = ()) -> None:
    if not _POINT or point != _POINT:
        return
    if _KEY and not any(k.startswith(_KEY) for k in keys):
        return
    os._exit(137)
