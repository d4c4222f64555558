import sys
from psp_tf.cli.evaluate import main
sys.exit(main())
