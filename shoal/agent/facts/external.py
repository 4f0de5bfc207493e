"""External facts from a facts.d directory, read as Facter reads them.

`.txt` (key=value lines), `.json` and `.yaml`/`.yml` (mappings; nested values flattened with dots),
and executables (any name) printing key=value lines or a JSON object, each run with a timeout.
Fact names are lower-cased, as Facter does. A source that fails (times out, exits non-zero, prints
garbage, is not valid JSON/YAML) is skipped whole and reported as a `SourceError`; the rest stand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from shoal.agent.facts import Facts, flatten

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class SourceError:
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def parse_key_values(text: str, source: str) -> Facts:
    facts: Facts = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"line {n} is not key=value: {line[:60]!r}")
        facts[key.strip().lower()] = value.strip()
    return facts


def parse_mapping(data: object, what: str) -> Facts:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a mapping of fact names to values, not {type(data).__name__}")
    return {k.lower(): v for k, v in flatten(data).items()}


def parse_file(path: Path) -> Facts | None:
    """Facts from a non-executable file, None for a kind Facter ignores."""
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return parse_key_values(text, path.name)
    if suffix == ".json":
        try:
            return parse_mapping(json.loads(text), "JSON")
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON: {e}") from None
    if suffix in (".yaml", ".yml"):
        try:
            return parse_mapping(yaml.safe_load(text), "YAML")
        except yaml.YAMLError as e:
            raise ValueError(f"invalid YAML: {str(e).splitlines()[0]}") from None
    return None


async def run_executable(path: Path, timeout: float) -> Facts:
    proc = await asyncio.create_subprocess_exec(
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        raise ValueError(f"timed out after {timeout:g}s and was killed") from None
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise ValueError(f"exited with {proc.returncode}" + (f": {detail[-1][:80]}" if detail else ""))
    text = out.decode(errors="replace")
    if text.lstrip().startswith("{"):
        try:
            return parse_mapping(json.loads(text), "JSON output")
        except json.JSONDecodeError as e:
            raise ValueError(f"printed invalid JSON: {e}") from None
    return parse_key_values(text, path.name)


async def gather(
    directory: Path | None, timeout: float = DEFAULT_TIMEOUT
) -> tuple[dict[str, Facts], list[SourceError]]:
    """Facts per source (file name -> facts) and the sources that failed."""
    if directory is None or not directory.is_dir():
        return {}, []
    entries = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    jobs = []
    for p in entries:
        if os.access(p, os.X_OK):
            jobs.append((p, run_executable(p, timeout)))
        else:
            jobs.append((p, asyncio.to_thread(parse_file, p)))
    results = await asyncio.gather(*(j for _, j in jobs), return_exceptions=True)
    by_source: dict[str, Facts] = {}
    errors: list[SourceError] = []
    for (p, _), r in zip(jobs, results, strict=True):
        if isinstance(r, BaseException):
            errors.append(
                SourceError(p.name, str(r) if isinstance(r, ValueError) else f"{type(r).__name__}: {r}")
            )
        elif r is not None:
            by_source[p.name] = r
    return by_source, errors
