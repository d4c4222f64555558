"""The writer tool's work (psp-write-tfrecords): a dataset split as TFRecord shards plus metadata."""

import tensorflow as tf

from psp_tf.data import registry, tfrecords
from psp_tf.data.config import WriteTFRecordsConfig
from psp_tf.errors import UserError
from psp_tf.outputs import refuse_overlap


def write(config: WriteTFRecordsConfig):
    """Opens the split `config` names and writes it as shards at `config.output`.

    Returns:
      (the Dataset written, the metadata dict of `tfrecords.write_tfrecords`).
    Raises:
      UserError: a bad option, directory or example (naming the file), or an output that refuses
        the write (naming --output).
    """
    refuse_overlap([("--output", config.output)], [("--data_dir", config.data_dir)])
    dataset = registry.open_dataset(config.dataset, config.data_dir, config.split, options=config.reader_options)
    try:
        meta = tfrecords.write_tfrecords(dataset, config.output, config.num_shards, progress=not config.quiet,
                                         flag="--output")
    except tf.errors.OpError as e:
        # Reading errors are UserErrors (the dataset readers name the file); an OpError here is the
        # output refusing a write: a read-only place, a full disk, a bucket without permission.
        raise UserError(f"--output {config.output}: cannot write the shards "
                        f"({tfrecords.op_error_reason(e).rsplit('; ', 1)[-1]})") from None
    return dataset, meta


def summary(config, dataset, meta):
    """The line the tool prints when done."""
    return (f"wrote {meta['num_examples']} examples of {dataset.name} {dataset.split} to "
            f"{config.num_shards} shard(s) {config.output}-*-of-{config.num_shards:05d}.tfrecord")
