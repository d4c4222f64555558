"""Entry point of `python -m convert` (see convert/cli.py)."""

import sys

from psp_tf.errors import import_tensorflow_quietly

import_tensorflow_quietly()

from convert import cli  # noqa: E402  (after TensorFlow's quiet start)

sys.exit(cli.main())
