"""`python -m psp_tf.convert`: converts the author's .caffemodel files (psp_tf/convert/cli.py)."""

import sys

from psp_tf.startup import import_tensorflow_quietly

import_tensorflow_quietly()

from psp_tf.convert import cli  # noqa: E402  (after TensorFlow's quiet start)

sys.exit(cli.main())
