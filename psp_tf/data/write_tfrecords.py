"""`python -m psp_tf.data.write_tfrecords`: writes a dataset split as TFRecord shards (+ metadata).

Example:
  python -m psp_tf.data.write_tfrecords --dataset ade20k --data_dir /data/ADEChallengeData2016 \
      --split training --output /data/ade_tfrecords/training --num_shards 64
"""

import argparse

from psp_tf.startup import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

import tensorflow as tf

from psp_tf.data import registry, tfrecords
from psp_tf import checks
from psp_tf.errors import ArgumentParser, UserError, exit_on_user_error
from psp_tf.outputs import refuse_overlap


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m psp_tf.data.write_tfrecords", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(sorted(registry.DATASETS))}")
    parser.add_argument("--data_dir", default=None, help="dataset root (local or gs://)")
    parser.add_argument("--split", required=True)
    parser.add_argument("--dataset_option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option, repeatable (e.g. num_classes=5, coarse=true)")
    parser.add_argument("--output", required=True,
                        help="shard prefix: writes PREFIX-00000-of-0000N.tfrecord and PREFIX.json")
    parser.add_argument("--num_shards", type=checks.arg_type(checks.POSITIVE_INT), default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    refuse_overlap([("--output", args.output)], [("--data_dir", args.data_dir)])
    dataset = registry.open_dataset(args.dataset, args.data_dir, args.split,
                                    **registry.parse_options(args.dataset_option))
    try:
        meta = tfrecords.write_tfrecords(dataset, args.output, args.num_shards, progress=not args.quiet,
                                         flag="--output")
    except tf.errors.OpError as e:
        # Reading errors are UserErrors (the dataset readers name the file); an OpError here is the
        # output refusing a write: a read-only place, a full disk, a bucket without permission.
        raise UserError(f"--output {args.output}: cannot write the shards "
                        f"({tfrecords.op_error_reason(e).rsplit('; ', 1)[-1]})") from None
    print(f"wrote {meta['num_examples']} examples of {dataset.name} {dataset.split} to "
          f"{args.num_shards} shard(s) {args.output}-*-of-{args.num_shards:05d}.tfrecord")


if __name__ == "__main__":
    main()
