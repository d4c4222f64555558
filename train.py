import sys
from psp_tf.cli.train import main
sys.exit(main())
