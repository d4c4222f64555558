"""`python -m convert` from a checkout: the same tool as `python -m psp_tf.convert` (psp_tf/cli/convert.py).

Only the repository has this folder; an installed psp_tf has no top-level `convert` module, whose
generic name would collide with other packages in a user's environment.
"""

import sys

from psp_tf.startup import import_tensorflow_quietly

import_tensorflow_quietly()

from psp_tf.convert import cli  # noqa: E402  (after TensorFlow's quiet start)

sys.exit(cli.main())
