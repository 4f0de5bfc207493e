"""Safety figures (issue 12): how much bad input shoal takes without a 5xx, and how bounded its work stays.

Sections, each printing its own figures against its goal:
  registry  the fuzzers' counts against a real `shoal registry` (tests/registry/test_fuzz.py): inputs
            tried per store and endpoint group, inputs accepted and refused, Consul's own documented
            500s (unknown session, node, datacenter), and unexpected 5xx (goal: 0); DNS packets sent.
  (the manager's sections — the pathological regex's placement time, `docker ps` with a hung node, RSS
  with a stalled log reader — are added beside this one.)

Run: `.venv/bin/python benchmarks/safety.py [--examples 2000] [--only registry]`. --examples is the
hypothesis budget per fuzzer (SHOAL_FUZZ_EXAMPLES; the test suite's own default is a few hundred).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# --- registry ------------------------------------------------------------------------------------------


def registry(examples: int) -> bool:
    """Runs the registry fuzzers at `examples` per fuzzer and prints their counts; True if none failed."""
    report = Path(tempfile.mkdtemp()) / "fuzz.json"
    env = {**os.environ, "SHOAL_FUZZ_EXAMPLES": str(examples), "SHOAL_FUZZ_REPORT": str(report)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/registry/test_fuzz.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - t0
    counts: dict[str, dict[str, int]] = json.loads(report.read_text()) if report.exists() else {}
    print(f"registry fuzzing: {examples} examples per fuzzer, {took:.0f} s, pytest exit {proc.returncode}")
    print(f"  {'store/group':<16} {'inputs':>8} {'accepted':>9} {'refused':>8} {'consul 500':>11} {'5xx':>5}")
    total_inputs = total_5xx = 0
    for name, c in counts.items():
        total_inputs += c.get("inputs", 0)
        total_5xx += c.get("unexpected_5xx", 0)
        if name.endswith("/dns"):
            print(f"  {name:<16} {c.get('inputs', 0):>8} malformed UDP/TCP packets; dig answered after them")
            continue
        print(
            f"  {name:<16} {c.get('inputs', 0):>8} {c.get('accepted', 0):>9} {c.get('errors', 0):>8} "
            f"{c.get('consul_500', 0):>11} {c.get('unexpected_5xx', 0):>5}"
        )
    print(f"  total {total_inputs} inputs, unexpected 5xx: {total_5xx} (goal 0)")
    if proc.returncode != 0:
        print("  failures:\n" + "\n".join("    " + line for line in proc.stdout.splitlines()[-30:]))
    return proc.returncode == 0 and total_5xx == 0


SECTIONS = {"registry": registry}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=2000, help="hypothesis examples per fuzzer")
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append")
    args = ap.parse_args()
    ok = True
    for name in args.only or SECTIONS:
        ok &= SECTIONS[name](args.examples)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
