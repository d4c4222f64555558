r"""psp-export: a servable SavedModel with the author's whole test protocol inside, and TFLite networks.

    psp-export --weights converted/pspnet50_ade20k --output exported/pspnet50_ade20k \
        [--scales 1.0|ms|0.5,1.0] [--noflip] [--batch_size N] [--precision float32|bfloat16] \
        [--tflite float32,float16,dynamic_int8] [--overwrite]

The SavedModel holds one copy of the weights and runs without psp_tf (TF Serving,
tf.saved_model.load, saved_model_cli). Its default signature takes a batch of encoded images
(`images` tf.string [N]: JPEG, PNG or BMP bytes) and returns `labels` uint8 [N, H, W] (train ids;
255 beyond each image's size, H and W the largest in the batch) and `sizes` int32 [N, 2]; the
`probabilities` signature also returns float32 [N, H, W, K]. Decoding (accurate-DCT JPEG), MATLAB
resize, padding, tiling, flip, blending and scales all happen inside. `psp_tf.json` beside it
records the class names, palette and protocol settings.

--tflite also writes the bare fixed-size network ([1, crop, crop, 3] RGB 0..255 -> logits) as
OUTPUT/network_KIND.tflite: float32, float16 (half-size weights) or dynamic_int8 (int8 weights).
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.inference.config import ExportConfig

FLAGS = flags.FlagValues()
driver.define_flags(ExportConfig, FLAGS)


def _export(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads.
    from psp_tf import export

    export.export_model(config)


def main(argv=None):
    return driver.run(__doc__, ExportConfig, FLAGS, _export, argv)


if __name__ == "__main__":
    sys.exit(main())
