"""Evaluates converted or trained PSPNet weights with the author's protocol and scores them.

    python evaluate.py --weights converted/pspnet50_ade20k --dataset ade20k \
        --data_dir ADEChallengeData2016 --split validation [--scales 1.0 | ms | 0.5,1.0,1.5] [--noflip] \
        [--batch_size N] [--max_images N] [--output_dir DIR] [--expect paper] [--tolerance 0.3] \
        [--strategy default|mirrored|tpu|multiworker] [--precision float32|bfloat16]
"""

import sys

from psp_tf.startup import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

from absl import app, flags

from psp_tf import checks
from psp_tf.errors import UserError, exit_on_user_error, parse_absl_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, "psp_tf weights directory (python -m convert / train.py output).")
flags.DEFINE_string("dataset", None, "dataset name (default: the preset's dataset).")
flags.DEFINE_string("data_dir", None, "dataset root directory.")
flags.DEFINE_multi_string("dataset_option", [], "a dataset reader option key=value (repeatable), e.g. "
                          "num_classes=5 for --dataset folder, coarse=true for cityscapes.")
flags.DEFINE_string("split", None, "split (default: the split the paper reports: validation / val).")
flags.DEFINE_string("scales", "1.0", "1.0 | ms (0.5..1.75) | comma-separated scales.")
flags.DEFINE_boolean("flip", True, "add the mirrored pass (the author always does); --noflip skips it.")
flags.DEFINE_integer("batch_size", 2, "network inputs per forward pass; > 2 also groups batch_size/2 "
                     "images per replica so small images' tiles share batches.")
flags.DEFINE_integer("max_images", None, "evaluate only the first N images.")
flags.DEFINE_string("output_dir", None, "write results.json and prediction PNGs here (atomically).")
flags.DEFINE_boolean("overwrite", False, "replace an existing --output_dir.")
flags.DEFINE_boolean("cityscapes_submission", False, "also write Cityscapes labelId PNGs (test server).")
flags.DEFINE_enum("expect", None, ["paper"], "compare with the published figures; exit 1 when mIoU is "
                  "more than --tolerance points below.")
flags.DEFINE_float("tolerance", 0.3, "allowed mIoU shortfall for --expect paper, in points.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "tpu", "multiworker"],
                  "tf.distribute strategy: images are sharded over its replicas.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy tpu (default: the local TPU).")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "network compute precision.")

# Every numeric flag and combination is checked while the flags are parsed (psp_tf.checks).
checks.absl_range("batch_size", checks.POSITIVE_INT)
checks.absl_range("max_images", checks.POSITIVE_INT)
checks.absl_range("tolerance", checks.NON_NEGATIVE)
checks.absl_output_path("output_dir")
checks.absl_requires("tpu", "--strategy tpu", lambda v: v["strategy"] == "tpu", ["strategy"])
checks.absl_requires("tolerance", "--expect paper", lambda v: v["expect"] is not None, ["expect"])
for _flag in ("overwrite", "cityscapes_submission"):
    checks.absl_requires(_flag, "--output_dir", lambda v, f=_flag: not v[f] or v["output_dir"] is not None,
                         ["output_dir"])


@exit_on_user_error
def run(argv):
    from psp_tf.evaluation import cli

    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.weights:
        raise UserError("--weights is required (a python -m convert or train.py output directory)")
    return cli.evaluate_from_flags(FLAGS)


def main(argv):
    sys.exit(run(argv) or 0)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_absl_flags)
