r"""Scans a dataset split and reports what the network will be fed; exit status 1 on problems.

    psp-check-data --dataset voc2012 --data_dir /data/VOCdevkit --split train
    psp-check-data --dataset folder --data_dir mydata --split train --dataset_option num_classes=5 \
        --samples 8 --samples_dir /tmp/samples --crop 473

Reports the image count, image sizes, the class pixel histogram and every bad example (one line
each, naming the file); --samples writes augmented training crops as sample_NNN.png (image beside
its label in the dataset's palette, ignore = white) into --samples_dir, replacing none. Every flag is
a field of psp_tf.data.config.CheckConfig.
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.data.config import CheckConfig

FLAGS = flags.FlagValues()
driver.define_flags(CheckConfig, FLAGS)


def _check(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads.
    from psp_tf.data import check

    return check.check(config)


def main(argv=None):
    return driver.run(__doc__, CheckConfig, FLAGS, _check, argv)


if __name__ == "__main__":
    sys.exit(main())
