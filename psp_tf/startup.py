"""Starting TensorFlow and OpenCV quietly: the command-line drivers call this before any work.

A bad input must end in exactly one `error:` line; TensorFlow's C++ side and OpenCV print their own.
"""

import importlib
import os
import sys

def import_tensorflow_quietly():
    """Imports TensorFlow and Keras with the process's stderr closed (command-line tools call it first).

    TensorFlow's C++ side prints lines while it loads and finds devices (oneDNN, the CUDA stub) that
    TF_CPP_MIN_LOG_LEVEL no longer silences; a bad input must end in exactly one `error:` line.
    Python exceptions still surface: stderr is restored before they propagate.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
