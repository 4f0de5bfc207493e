"""Facter's own output, merged in with `--facter` where the program is installed.

`facter --json --show-legacy` takes ~0.4 s and can exit 1 with valid JSON on stdout (e.g. when
/proc/1/environ is unreadable), so stdout is parsed whatever the exit code.
"""

from __future__ import annotations

import asyncio
import json
import shutil

from shoal.agent.facts import Facts, flatten


async def gather(timeout: float = 10.0) -> Facts:
    exe = shutil.which("facter")
    if exe is None:
        raise ValueError("facter is not installed (apt-get install facter)")
    proc = await asyncio.create_subprocess_exec(
        exe, "--json", "--show-legacy", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ValueError(f"facter timed out after {timeout:g}s") from None
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        raise ValueError(f"facter printed no JSON (exit {proc.returncode})") from None
    return flatten(data)
