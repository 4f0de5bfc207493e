"""Structured logs for every long-running shoal process (manager, registry, agent): one line per event,
`key=value` pairs (logfmt) by default or one JSON object with `--log-format json`, so an operator can grep
one placement end to end by its container, node or decision id.

Call sites say what happened and give the facts as fields:

    kv(log, "placed", container=cid[:12], node="node2", decision=did)
    -> ts=2026-12-01T10:00:00.123Z level=info logger=shoal.manager event=placed container=... node=node2 ...

Lines from libraries that log plain text keep their words under `msg=`.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any

FORMATS = ("logfmt", "json")
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")


def kv(
    logger: logging.Logger, event: str, /, level: int = logging.INFO, *, exc_info: bool = False, **fields: Any
) -> None:
    """One event with its fields; None-valued fields are left out; `exc_info` adds the traceback."""
    if logger.isEnabledFor(level):
        clean = {k: v for k, v in fields.items() if v is not None}
        logger.log(level, event, exc_info=exc_info, extra={"kv": clean})


def _value(v: Any) -> str:
    if isinstance(v, dict | list | tuple):
        s = json.dumps(v, default=str)
    else:
        s = v if isinstance(v, str) else str(v)
    return s if s and _BARE.match(s) else json.dumps(s)


def _ts(created: float) -> str:
    t = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _ts(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    fields = getattr(record, "kv", None)
    if fields is None:
        out["msg"] = record.getMessage()
    else:
        out["event"] = record.getMessage()
        out.update(fields)
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    """The root logger for a shoal process: the level, and one line per record in the chosen form."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
