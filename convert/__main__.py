"""Entry point of `python -m convert` (see convert/cli.py)."""

import os
import sys


def _import_quietly():
    """Imports the CLI (and with it TensorFlow) with stderr closed.

    TensorFlow's C++ side prints INFO lines while it loads (oneDNN, CUDA stub) that
    TF_CPP_MIN_LOG_LEVEL no longer silences; a bad input must end in exactly one `error:` line.
    Python exceptions still surface: stderr is restored before they propagate.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        from convert import cli  # noqa: imports tensorflow and keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return cli


sys.exit(_import_quietly().main())
