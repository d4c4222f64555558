"""`python -m psp_tf.convert`: the same tool as psp-convert (psp_tf/cli/convert.py)."""

import sys

from psp_tf.cli.convert import main

sys.exit(main())
