"""`python -m convert` from a checkout: the same tool as psp-convert (psp_tf/cli/convert.py).

Only the repository has this folder; an installed psp_tf has no top-level `convert` module, whose
generic name would collide with other packages in a user's environment.
"""

import sys

from psp_tf.cli.convert import main

sys.exit(main())
