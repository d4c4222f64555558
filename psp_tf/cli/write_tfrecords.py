r"""Writes a dataset split as TFRecord shards plus PREFIX.json (for TPUs and large runs).

    psp-write-tfrecords --dataset ade20k --data_dir /data/ADEChallengeData2016 \
        --split training --output /data/ade_tfrecords/training --num_shards 64
    psp-write-tfrecords --dataset folder --data_dir mydata --split train \
        --dataset_option num_classes=5 --output gs://bucket/mydata/train --num_shards 8

Each record keeps the image file's bytes and the label as a grey PNG of train ids; psp-train reads
the set with --tfrecords DIR (split = the prefix's base name), psp-evaluate and psp-check-data with
--dataset tfrecord --data_dir DIR --split NAME. Every flag is a field
of psp_tf.data.config.WriteTFRecordsConfig.
"""

import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.data.config import WriteTFRecordsConfig

FLAGS = flags.FlagValues()
driver.define_flags(WriteTFRecordsConfig, FLAGS)


def _write(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads.
    from psp_tf.data import write_tfrecords

    dataset, meta = write_tfrecords.write(config)
    print(write_tfrecords.summary(config, dataset, meta))


def main(argv=None):
    return driver.run(__doc__, WriteTFRecordsConfig, FLAGS, _write, argv)


if __name__ == "__main__":
    sys.exit(main())
