"""Starting TensorFlow and OpenCV quietly: the command-line drivers call this before any work.

A bad input must end in exactly one `error:` line; TensorFlow's C++ side and OpenCV print their own.
"""

import ctypes
import importlib
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory():
    """Makes glibc's malloc keep freed memory for reuse instead of handing each large block back.

    glibc serves every allocation over its mmap threshold (at most 32 MB) with a fresh mmap and unmaps
    it on free, so each such tensor is page-faulted and zeroed by the kernel anew. A PSPNet forward
    at 473 or 713 makes dozens of them (a batch of 473x473 tiles' 150-class probabilities alone is
    134 MB). On a 2-core AMD EPYC (benchmarks/eval_benchmark.py, README), serving large blocks from the
    heap made the streamed evaluation of PSPNet50 1.37x faster (1.12x on a slower VM) and PSPNet101's
    1024x2048 image 1.11x, for a 6% higher peak (2.35 GB against 2.22). Freed memory is kept by the
    process for reuse; the heap's free top is handed back only past 2 GB.

    Returns True where the allocator is glibc's and took both settings (elsewhere: False, no change).
    """
    # The process's own symbols: the C library it already runs on, found without ctypes.util.find_library
    # (which starts an ldconfig process at every tool's start).
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl, macOS)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. No block is mmap'ed on its own, and the heap's top is trimmed only
    # past 2 GB free (the largest int mallopt takes). Both are set even if the first fails (`&`).
    return bool(mallopt(_M_MMAP_MAX, 0)) & bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def import_tensorflow_quietly():
    """Imports TensorFlow and Keras with the process's stderr closed (command-line tools call it first).

    TensorFlow's C++ side prints lines while it loads and finds devices (oneDNN, the CUDA stub) that
    TF_CPP_MIN_LOG_LEVEL no longer silences; a bad input must end in exactly one `error:` line.
    Python exceptions still surface: stderr is restored before they propagate.

    TF_CPP_MIN_LOG_LEVEL 3 (unless set): TensorFlow's C++ ERROR lines too, e.g. libjpeg's "Premature
    end of JPEG data" for each try at a truncated image, which the tools report in their one line
    naming the file (TF_CPP_MIN_LOG_LEVEL=0 shows them all).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keep_freed_memory()
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        tf = importlib.import_module("tensorflow")
        importlib.import_module("keras")
        tf.config.list_physical_devices()  # device discovery logs a cuInit failure on CPU-only hosts
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    quiet_opencv()


def quiet_opencv():
    """Silences OpenCV's own log: decoding a broken image prints `[ WARN:0@...]` / `[ERROR:0@...]` lines
    before returning None, and the tools already report that file in their one `error:` line."""
    try:
        import cv2
    except ImportError:
        return
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
