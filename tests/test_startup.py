"""psp_tf.startup: the tools' quiet start keeps freed memory in the heap (glibc's allocator)."""

import platform
import subprocess
import sys

import pytest

from psp_tf import startup
from support import REPO

# A fresh interpreter without TensorFlow (the allocator's settings are per process): one 64 MB block
# from malloc, then freed and asked for again. mallinfo2 (glibc >= 2.33) reports the bytes in mmap'ed
# blocks (hblkhd; the block's share is the change) and the heap's size (arena).
_PROBE = """
import ctypes, json, sys
from psp_tf import startup

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL(None)  # the process's own C library
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = startup.keep_freed_memory() if sys.argv[1] == "keep" else None
mapped_before = libc.mallinfo2().hblkhd  # blocks the interpreter's start mapped
block = libc.malloc(64 << 20)
mapped = libc.mallinfo2().hblkhd - mapped_before
libc.free(block)
heap_after_free = libc.mallinfo2().arena
again = libc.malloc(64 << 20)
print(json.dumps({"kept": kept, "mapped": mapped, "heap_after_free": heap_after_free,
                  "same_block": again == block}))
"""

_LIBC, _VERSION = platform.libc_ver()
glibc_only = pytest.mark.skipif(
    _LIBC != "glibc" or tuple(int(part) for part in _VERSION.split(".")[:2]) < (2, 33),
    reason="glibc's allocator, and its mallinfo2 (2.33 and later)")


def _probe(mode):
    import json

    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@glibc_only
def test_large_blocks_come_from_the_heap_and_stay_there():
    default, kept = _probe("glibc"), _probe("keep")
    # glibc's default: a 64 MB block is a fresh mapping of its own, unmapped again on free.
    assert default["mapped"] >= 64 << 20
    assert default["heap_after_free"] < 64 << 20
    # Kept: the block comes from the heap, which keeps it when freed, and the next one reuses it.
    assert kept["kept"] is True
    assert kept["mapped"] == 0
    assert kept["heap_after_free"] >= 64 << 20
    assert kept["same_block"] is True


def test_the_tools_quiet_start_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(startup, "keep_freed_memory", lambda: calls.append(1) or True)
    startup.import_tensorflow_quietly()  # TensorFlow is already imported here: only the settings run
    assert calls == [1]
