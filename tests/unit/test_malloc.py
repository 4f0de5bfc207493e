"""shoal.malloc: after a big buffer is freed, the next big one is still a mapping of its own (given back
to the system when freed), where glibc's moving threshold would have taken it from the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
from shoal import malloc

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert malloc.tune()
libc.free(libc.malloc(24 << 20))  # a 24 MB body answered and freed: the moving threshold goes to 24 MB
before = libc.mallinfo2().hblkhd
p = libc.malloc(2 << 20)
print("mapped" if libc.mallinfo2().hblkhd - before >= 2 << 20 else "heap")
libc.free(p)
"""


def _where(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_big_buffer_after_a_bigger_one_is_still_mapped():
    assert _where("default") == "heap"  # what the setting is for: glibc's own behaviour here
    assert _where("tuned") == "mapped"
