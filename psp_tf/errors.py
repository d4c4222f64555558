"""User-facing errors: one line that names the file or flag and what is wrong.

Library code raises `UserError`; the command-line drivers (psp_tf/cli) print it as `error: ...` and
exit with status 2. `out_of_memory_message` turns a failed allocation into such a line too.
"""

import sys


class UserError(ValueError):
    """A problem with the user's input; the message is one line naming the file/flag and the fault."""


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
