r"""psp-synthetic-caffemodel: a stand-in for a released caffemodel, for a dry run before the download ends.

    psp-synthetic-caffemodel --preset pspnet50_ade20k --output dry/pspnet50_ADE20K.caffemodel [--seed 0]
        [--training_layers] [--overwrite]

The file has the author's exact layer list (names, types, parameters of the deploy prototxt in
psp_tf/specs), written with the protobuf schema the converter reads, and seeded random weights with
realistic scales (He-initialised convolutions, BN statistics matching their activations), so that
every tool can be tried end to end:

    psp-convert --caffemodel dry/pspnet50_ADE20K.caffemodel --output dry/converted --verify
    psp-predict --weights dry/converted --input photo.jpg --output dry/predictions
    python evaluate.py --weights dry/converted --dataset ade20k --data_dir ADEChallengeData2016 \
        --split validation --max_images 2

The weights are random: the pictures and the mIoU mean nothing; the parity check does.
PSPNet50-ADE20K is 187 MB, PSPNet101-VOC 263 MB, PSPNet101-Cityscapes 263 MB.
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.convert.config import SyntheticCaffemodelConfig

FLAGS = flags.FlagValues()
driver.define_flags(SyntheticCaffemodelConfig, FLAGS)


def _write(config):
    # Imported after the flags are parsed: --help and a bad flag answer at once.
    from psp_tf.convert import synthetic

    synthetic.write_preset(config)


def main(argv=None):
    return driver.run(__doc__, SyntheticCaffemodelConfig, FLAGS, _write, argv)


if __name__ == "__main__":
    sys.exit(main())
