r"""psp-predict: segment images with the author's protocol; colour masks, label PNGs and overlays.

    psp-predict --weights converted/pspnet50_ade20k --input photo.jpg --output out/ \
        [--scales 1.0|ms|0.5,1.0] [--noflip] [--overlay] [--batch_size N] [--precision float32|bfloat16]

For every image `<stem>.<ext>` it writes `<stem>.png` (colour mask with the preset's palette),
`<stem>_labels.png` (train ids as grey values) and, with --overlay, `<stem>_overlay.png` (the image
under the mask, with a legend of the classes present). `psp_tf.predict(model, image)` is the
library call.

Images are streamed: one is decoded, predicted and written at a time, each output file moved into
--output only once complete. A run that stops (an error, Ctrl-C, a kill) keeps the images it
finished; running the same command again skips every image whose outputs are all present and does
the rest (--overwrite redoes them all). --output/predict.json records the weights' sha256, scales,
flip and precision that made the outputs: a rerun with others is refused (one error line) rather
than mixing two runs' masks. Hidden files (names starting with '.') in an --input directory are
skipped.
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.inference.config import PredictConfig

FLAGS = flags.FlagValues()
driver.define_flags(PredictConfig, FLAGS)


def _predict(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads.
    from psp_tf.inference import files

    return files.predict_files(config)


def main(argv=None):
    return driver.run(__doc__, PredictConfig, FLAGS, _predict, argv)


if __name__ == "__main__":
    sys.exit(main())
