"""User-facing errors and atomic file output, shared by every command-line tool.

Bad input must end in one clear line that names the file or flag, exit status 2, and nothing
half-written: tools raise `UserError`, wrap their entry point with `exit_on_user_error`, and write
outputs through `atomic_directory` / `atomic_file` (temporary path, then rename).
"""

import argparse
import contextlib
import functools
import importlib
import os
import shutil
import sys
import tempfile


class UserError(ValueError):
    """A problem with the user's input; the message is one line naming the file/flag and the fault."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for our `python -m` tools: a bad command line is one `error:` line and exit 2.

    Plain argparse prints the whole usage block before its error; `--help` still shows the usage.
    """

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_absl_flags(argv):
    """`flags_parser` for absl's app.run: a bad flag or value is one `error:` line and exit 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def exit_on_user_error(main):
    """Decorates a CLI entry point: a UserError prints `error: <message>` to stderr and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 (only out-of-memory is handled; the rest re-raised)
            message = out_of_memory_message(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def out_of_memory_message(error):
    """One line for an allocation that failed (MemoryError, TensorFlow's ResourceExhaustedError), or None.

    The flags set the work (scales, batch size, crop): out of memory is a bad command line, not a crash.
    """
    tf = sys.modules.get("tensorflow")  # never imported here: tools import it quietly first
    if isinstance(error, MemoryError):
        detail = str(error) or "an allocation failed"
    elif tf is not None and isinstance(error, tf.errors.ResourceExhaustedError):
        lines = [line.strip() for line in (error.message or "").splitlines() if "OOM" in line]
        detail = (lines[0] if lines else "an allocation failed").split(" and type ")[0]
    else:
        return None
    return (f"out of memory ({detail}): reduce the work the flags ask for (scales, batch size, crop "
            f"or image size)")


@contextlib.contextmanager
def atomic_directory(path, overwrite=False):
    """Yields a temporary directory beside `path`; on success it replaces `path`, on failure it is removed.

    Raises:
      UserError: `path` exists and `overwrite` is False, or its parent cannot be written.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
        # mkdtemp makes 0700 directories; give the output what a plain mkdir would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
    except OSError as e:
        raise UserError(f"cannot write output {path}: {e.strerror}") from None
    try:
        yield tmp
        if os.path.exists(path):
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path, mode="wb"):
    """Yields a file object for a temporary file beside `path`, renamed onto `path` on success."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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
