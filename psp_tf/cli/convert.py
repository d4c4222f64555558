r"""psp-convert: the author's .caffemodel -> a psp_tf weights directory (checkpoint, Keras weights, config.json).

    psp-convert --caffemodel pspnet101_cityscapes.caffemodel --output converted/pspnet101_cityscapes \
        [--prototxt F] [--preset NAME] [--verify] [--savedmodel DIR] [--overwrite]

Also `python -m psp_tf.convert ...`, and `python -m convert ...` from a checkout. No Caffe install is
needed. The output directory holds `ckpt.*` (tf.train.Checkpoint of the model), `model.weights.h5`
(Keras) and `config.json` (preset, classes, mean, the source file's sha256, the --verify result);
`psp_tf.load_model(DIR)` rebuilds the inference model from it. --verify runs an independent NumPy
implementation of Caffe's layers on a fixed image and compares the logits (max|d|/std <= 1e-4,
argmax agreement >= 99.99%), naming the first diverging layer on a failure.

Bad input ends in one `error:` line, exit 2, and nothing written; a failed --verify exits 1 and
writes nothing. Without the real files, `psp-synthetic-caffemodel` writes one to try this on.
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.convert.config import ConvertConfig

FLAGS = flags.FlagValues()
driver.define_flags(ConvertConfig, FLAGS)


def _convert(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads.
    from psp_tf.convert import run

    try:
        run.convert_file(config)
    except run.VerificationFailed as e:
        print(f"verification failed: {e}; nothing written", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    return driver.run(__doc__, ConvertConfig, FLAGS, _convert, argv)


if __name__ == "__main__":
    sys.exit(main())
