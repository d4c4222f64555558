r"""Trains PSPNet. With no flags: the `tiny` preset on the built-in synthetic dataset, then evaluates it.

    python train.py                                   # the demo (2 CPU cores, a few minutes)
    python train.py --preset pspnet50_ade20k --dataset ade20k --data_dir ADEChallengeData2016 \
        --init converted/pspnet50_ade20k --fresh_classifier ...   # see README: paper-scale recipes
    python train.py --dataset folder --data_dir mydata --dataset_option num_classes=5 --eval_split none

The work directory (default runs/<preset>_<dataset>) gets train_config.json (every setting, the
resolved network and augmentation), checkpoints/, tensorboard/ and the trained model/; rerunning the
same command resumes. Every flag is a field of psp_tf.training.TrainConfig.
"""

import re
import sys

from absl import flags

from psp_tf.cli import driver
from psp_tf.training.config import RESOLVED_FIELDS, TrainConfig

FLAGS = flags.FlagValues()
driver.define_flags(TrainConfig, FLAGS, exclude=RESOLVED_FIELDS)


_DECODER = re.compile(r"Decode(Image|Jpeg|Png|Bmp|Gif)|decode_image")


def _first_data_error_line(message):
    """The line of a tf.data InvalidArgumentError that says what is wrong ('assertion failed: ...')."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "assertion failed" in line:
            text = line.split("assertion failed:", 1)[1].strip().split("\t")[0]
            # The data pipeline's asserts carry one message string, which tf.debugging.Assert brackets
            # (and whose quotes it escapes: "dataset\'s").
            text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            return text.replace("\\'", "'")
    return next((line for line in lines if not line.endswith("execution error:")), "bad input data")


def _train(config):
    # Imported after the flags are parsed: --help and a bad flag answer before TensorFlow loads.
    from absl import logging
    import tensorflow as tf

    from psp_tf.data.tfrecords import op_error_reason
    from psp_tf.errors import UserError
    from psp_tf.outputs import no_room_reason
    from psp_tf.training import config as config_lib
    from psp_tf.training import inputs, trainer

    # TF's INFO lines (e.g. each checkpoint's saver timing) would go to stderr; the progress line and
    # our messages already say what a user needs.
    logging.set_verbosity(logging.WARNING)
    try:
        result = trainer.train(config)
    except tf.errors.InvalidArgumentError as e:
        # Bad data met inside the tf.data pipeline (a label value out of range, an image whose size
        # differs from its label's): the message names the file. TensorFlow's own decoders name none
        # (a file that is no image, a truncated one): the host reader finds it.
        found = None
        if "assertion failed" not in e.message and _DECODER.search(e.message):
            print("a training image did not decode; reading the split to name it", flush=True)
            found = inputs.first_undecodable_image(config_lib.resolve(config))
        raise UserError(found or _first_data_error_line(e.message)) from None
    except tf.errors.DataLossError as e:
        # A --tfrecords shard whose bytes changed after it was written (the CRC TensorFlow checks).
        raise UserError(f"--tfrecords: a shard is damaged ({op_error_reason(e)}); psp-check-data "
                        f"--dataset tfrecord --data_dir DIR --split S names it") from None
    except tf.errors.OpError as e:  # a checkpoint save the file system refused (disk full, ...)
        reason = no_room_reason(e)
        if reason is None:
            raise
        raise UserError(f"cannot write in --workdir {config.workdir}: {reason}") from None
    except trainer.TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except trainer.Preempted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    if result.metrics:
        if "table" in result.metrics:
            print(result.metrics["table"])
        print(f"mIoU {result.metrics['miou']:.4f} after {result.step} steps (workdir {result.workdir})")
    else:
        print(f"trained {result.step} steps (workdir {result.workdir}; model in {result.workdir}/model)")
    return 0


def _resolved_later(arguments):
    del arguments
    return {name: None for name in RESOLVED_FIELDS}


def main(argv=None):
    return driver.run(__doc__, TrainConfig, FLAGS, _train, argv, fixed=_resolved_later)


if __name__ == "__main__":
    sys.exit(main())
