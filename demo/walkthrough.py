"""Runs the README's walkthrough block (between the `walkthrough` markers) in one bash session, printing
each command before its output: `make demo` runs it, and so does the acceptance suite, so the README, the
demo and the tests cannot drift apart. Exits with the first failing command's status."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"


def commands(readme: str) -> list[str]:
    """The block's commands, a backslash-continued command joined into one; comments kept as headings."""
    block = readme.split(START, 1)[1].split(END, 1)[0]
    block = re.sub(r"^```\w*\n|```\s*$", "", block.strip(), flags=re.M)
    out, cur = [], ""
    for line in block.splitlines():
        if not line.strip() and not cur:
            continue
        part = line.strip() if cur else line.rstrip()
        cur += part.rstrip("\\").rstrip() + " " if part.endswith("\\") else part
        if not line.endswith("\\"):
            out.append(cur.strip())
            cur = ""
    return out


def script(cmds: list[str]) -> str:
    lines = ["set -eo pipefail", f"cd {shlex.quote(str(ROOT))}"]
    for c in cmds:
        if c.startswith("#"):
            lines.append(f"printf '\\n\\033[1;34m%s\\033[0m\\n' {shlex.quote(c)}")
        else:
            lines.append(f"printf '\\033[1m$ %s\\033[0m\\n' {shlex.quote(c)}")
            lines.append(c)
    return "\n".join(lines) + "\n"


def main() -> int:
    cmds = commands((ROOT / "README.md").read_text())
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", script(cmds)], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
