r"""Evaluates converted or trained PSPNet weights with the author's protocol and scores them.

    python evaluate.py --weights converted/pspnet50_ade20k --dataset ade20k \
        --data_dir ADEChallengeData2016 --split validation [--scales 1.0 | ms | 0.5,1.0,1.5] [--noflip] \
        [--batch_size N] [--max_images N] [--output_dir DIR] [--show_dir DIR [--show_max N]] \
        [--expect paper] [--tolerance 0.3] [--strategy default|mirrored|tpu|multiworker] \
        [--precision float32|bfloat16] [--nojit_compile]

(`psp-evaluate` is the same command once installed.) The network runs as one fixed-shape step of
--batch_size tiles per replica (XLA-compiled with --jit_compile, the default on a GPU or TPU);
resizing, tiling and blending run on the host.
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.evaluation.config import EvalConfig

FLAGS = flags.FlagValues()  # private to the driver: tests can run several in one process
driver.define_flags(EvalConfig, FLAGS)


def _evaluate(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads (4-19 s).
    from psp_tf.evaluation import run

    return run.evaluate(config)


def main(argv=None):
    return driver.run(__doc__, EvalConfig, FLAGS, _evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
