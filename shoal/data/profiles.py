"""Storage profiles from one file (YAML), or the built-in gold/silver/bronze:

default: bronze
profiles:
  gold:   {replicas: 1}                        # no limits; one read-only copy on another node
  silver: {read_bps: 100M, write_bps: 100M, read_iops: 4000, write_iops: 4000}
  bronze: {read_bps: 10M, write_bps: 10M, read_iops: 500, write_iops: 500}

A profile's `constraints:` (a list, e.g. `[storage==ssd, "region!=eu-1"]`) says where the scheduler may
put its replicas: each item is what `-e constraint:` takes (shoal.scheduler.expr; a leading `constraint:`
is allowed), checked here so a typo stops the manager or agent at start with the profile's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shoal.data.model import DEFAULT_PROFILE, DEFAULT_PROFILES, Profile, parse_size
from shoal.errors import BadRequest
from shoal.scheduler.expr import parse

_FIELDS = ("read_bps", "write_bps", "read_iops", "write_iops", "replicas", "constraints")


def profile_constraints(name: str, raw: Any) -> tuple[str, ...]:
    """A profile's `constraints:` checked (pure): a list of constraint expressions, each parsed as
    `-e constraint:` parses it; kept as their text (without the `constraint:` prefix)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise BadRequest(
            f"profile {name}: constraints must be a list of expressions, e.g. [storage==ssd, node!=node1]"
        )
    out = []
    for text in raw:
        if text.startswith("affinity:"):
            raise BadRequest(f"profile {name}: {text!r} is an affinity; a profile takes constraints only")
        expr = text.removeprefix("constraint:")
        try:
            parse("constraint", expr)
        except BadRequest as e:
            raise BadRequest(f"profile {name}: {e.message}") from None
        out.append(expr)
    return tuple(out)


def profiles_from_doc(doc: Mapping[str, Any]) -> tuple[dict[str, Profile], str]:
    """Pure: a parsed profiles file to (profiles, default)."""
    raw = doc.get("profiles")
    if not isinstance(raw, dict) or not raw:
        raise BadRequest("the profiles file needs a `profiles:` mapping of name -> limits")
    out = {}
    for name, limits in raw.items():
        limits = limits or {}
        unknown = sorted(set(limits) - set(_FIELDS))
        if unknown:
            raise BadRequest(
                f"profile {name}: unknown key {', '.join(unknown)} (known: {', '.join(_FIELDS)})"
            )
        values: dict[str, Any] = {
            k: parse_size(str(v)) if k.endswith("bps") else int(v)
            for k, v in limits.items()
            if v is not None and k != "constraints"
        }
        if "constraints" in limits:
            values["constraints"] = profile_constraints(str(name), limits["constraints"])
        if not 0 <= values.get("replicas", 0) <= 4:
            raise BadRequest(f"profile {name}: replicas is {values['replicas']}; give 0 to 4")
        out[str(name)] = Profile(str(name), **values)
    default = str(doc.get("default", DEFAULT_PROFILE if DEFAULT_PROFILE in out else next(iter(out))))
    if default not in out:
        raise BadRequest(f"default profile {default!r} is not one of {', '.join(out)}")
    return out, default


def load_profiles(path: Path | None) -> tuple[dict[str, Profile], str]:
    if path is None:
        return dict(DEFAULT_PROFILES), DEFAULT_PROFILE
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BadRequest(f"cannot read profiles file {path}: {e}") from None
    return profiles_from_doc(doc or {})


def blkio(profile: Profile, device: str) -> dict[str, list[dict[str, Any]]]:
    """A profile's limits as Docker HostConfig entries for the pool's device (pure)."""
    pairs = [
        ("BlkioDeviceReadBps", profile.read_bps),
        ("BlkioDeviceWriteBps", profile.write_bps),
        ("BlkioDeviceReadIOps", profile.read_iops),
        ("BlkioDeviceWriteIOps", profile.write_iops),
    ]
    return {key: [{"Path": device, "Rate": rate}] for key, rate in pairs if rate}
