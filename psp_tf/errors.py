"""User-facing errors: one line that names the file or flag and what is wrong.

Library code raises `UserError`; the command-line drivers (psp_tf/cli) print it as `error: ...` and
exit with status 2. `out_of_memory_message` turns a failed allocation into such a line too.
"""

import argparse
import functools
import sys


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
