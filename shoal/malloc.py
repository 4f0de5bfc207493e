"""The C allocator's one setting the servers change: big buffers always their own mapping.

glibc serves an allocation of more than M_MMAP_THRESHOLD bytes with a mapping of its own, unmapped (given
back to the system) when freed. By default the threshold moves: each such buffer freed raises it to that
buffer's size (up to 32 MB), so the next ones come from the heap instead, where, freed, they stay the
process's as long as anything lives above them. A manager answering `docker ps -a` at 30,000 containers
makes 24 MB bodies; after a few of them its heap kept ~80 MB nobody used (1,000 nodes x 30, one A/B pair
set through glibc's environment variables: 555 MB at idle against 466 with the threshold fixed). This
call, in two interleaved pairs at 1,000 x 30: after the `ps` reads 420 / 421 MB against 427 / 430
without it, and no cost seen (fill 175 / 177 runs/s against 167 / 187, manager CPU a run 3.7 / 3.7 ms
against 3.9 / 3.5). Python's own small objects come from its arenas and are not affected.

Set from the program's start (`tune`); a process on another C library (musl, macOS) is left as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from shoal.logs import kv

log = logging.getLogger("shoal.malloc")

M_MMAP_THRESHOLD = -3  # glibc's malloc.h: setting it also turns the moving threshold off
MAPPED_FROM = 1 << 20  # bytes: buffers this big or bigger are mapped, and unmapped when freed


def tune(mapped_from: int = MAPPED_FROM) -> bool:
    """Fixes glibc's mmap threshold at `mapped_from`; False (and nothing changed) elsewhere."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, mapped_from) == 1
    if not done:
        kv(log, "malloc threshold not set", mapped_from=mapped_from)
    return done
