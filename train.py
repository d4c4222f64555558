"""Trains PSPNet. With no flags: the `tiny` preset on the built-in synthetic dataset, then evaluates it.

    python train.py                                   # the demo (2 CPU cores, a few minutes)
    python train.py --preset pspnet50_ade20k --dataset ade20k --data_dir ADEChallengeData2016 \
        --init converted/pspnet50_ade20k --fresh_classifier ...   # see README: paper-scale recipes

Every flag is a field of psp_tf.training.TrainConfig; the library does the work.
"""

import dataclasses
import sys

from psp_tf.startup import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

from absl import app, flags, logging
import tensorflow as tf

from psp_tf.data.tfrecords import op_error_reason
from psp_tf.errors import UserError, out_of_memory_message, parse_absl_flags
from psp_tf.training import config as config_lib
from psp_tf.training import trainer

F = flags.FLAGS
flags.DEFINE_string("preset", "tiny", "Model preset (psp_tf.presets).")
flags.DEFINE_string("dataset", None, "Dataset name (psp_tf.data); default: the preset's dataset.")
flags.DEFINE_string("data_dir", None, "Dataset root directory (not needed for synthetic).")
flags.DEFINE_multi_string("dataset_option", [], "A dataset reader option key=value (repeatable), e.g. "
                          "num_classes=5 or class_names=a,b,c for --dataset folder, coarse=true for cityscapes.")
flags.DEFINE_string("tfrecords", None, "Directory (local or gs://) of `python -m psp_tf.data.write_tfrecords` "
                    "shards: reads <dir>/<split>-*.tfrecord (and --eval_split's), instead of --data_dir.")
flags.DEFINE_string("split", "train", "Training split.")
flags.DEFINE_string("eval_split", None, "Evaluation split (default: the dataset's validation split).")
flags.DEFINE_enum("stem", None, ["deep", "resnet"], "Override the preset's stem: 'resnet' (7x7/64) to "
                  "start from a keras.applications ImageNet ResNet with --init (default: the preset's).")
flags.DEFINE_string("init", "none", "'none', a converted PSPNet directory, or a Keras ResNet50/101 ImageNet "
                    ".h5/.weights.h5 file (presets with stem 'resnet').")
flags.DEFINE_bool("fresh_classifier", False, "With a PSPNet --init: train a new classifier "
                  "(required when its classes differ from the dataset's).")
flags.DEFINE_string("workdir", "runs/tiny_synthetic", "Checkpoints, config, TensorBoard; a rerun resumes.")
flags.DEFINE_integer("steps", None, "Training steps (default: the preset's recipe).")
flags.DEFINE_integer("batch_size", None, "Global batch size over all replicas (default: recipe).")
flags.DEFINE_integer("crop_size", None, "Square training crop (default: the preset's crop).")
flags.DEFINE_float("lr", None, "Base learning rate (default: the recipe's: 0.01, the paper's; 0.05 for tiny).")
flags.DEFINE_float("poly_power", 0.9, "Poly schedule exponent: lr * (1 - step/steps) ** power.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("head_lr_mult", 10.0, "lr multiplier of the layers --init did not provide.")
flags.DEFINE_float("weight_decay", 1e-4, "Plain L2 decay (Caffe convention: wd/2 * |w|^2) of all conv "
                   "kernels; with --l2sp_alpha > 0 the default decay of new layers.")
flags.DEFINE_float("l2sp_alpha", 0.0, "L2-SP: alpha/2 * |w - w0|^2 for kernels loaded by --init (0: off).")
flags.DEFINE_float("l2sp_beta", None, "L2-SP: beta/2 * |w|^2 for new layers (default: --weight_decay).")
flags.DEFINE_float("aux_weight", 0.4, "Weight of the auxiliary loss (0: no aux head).")
flags.DEFINE_bool("sync_bn", False, "Synchronise BN statistics across all replicas.")
flags.DEFINE_bool("freeze_bn", False, "BN in inference mode with gamma/beta frozen.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bf16", "fp16"], "Compute precision (fp16 uses loss scaling).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker", "tpu"], "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name for --strategy tpu ('local' on a TPU VM).")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("eval_every", 0, "Steps between evaluations (0: only at the end).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation.")


def config_from_flags():
    """The TrainConfig the flags describe (unresolved)."""
    names = [f.name for f in dataclasses.fields(config_lib.TrainConfig) if f.name != "dataset_options"]
    values = {name: F[name].value for name in names}
    return config_lib.TrainConfig(dataset_options=tuple(F.dataset_option), **values)


def _first_data_error_line(message):
    """The line of a tf.data InvalidArgumentError that says what is wrong ('assertion failed: ...')."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "assertion failed" in line:
            text = line.split("assertion failed:", 1)[1].strip().split("\t")[0]
            # The data pipeline's asserts carry one message string, which tf.debugging.Assert brackets.
            return text[1:-1] if text.startswith("[") and text.endswith("]") else text
    return next((line for line in lines if not line.endswith("execution error:")), "bad input data")


def main(argv):
    # absl's app.run logs TF's INFO lines (e.g. each checkpoint's saver timing) to stderr; our progress
    # bar and messages already say what a user needs.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        print(f"error: unexpected argument {argv[1]!r} (flags are --name=value)", file=sys.stderr)
        return 2
    try:
        config = config_lib.resolve(config_from_flags())
        result = trainer.train(config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except tf.errors.InvalidArgumentError as e:
        # Bad data met inside the tf.data pipeline (a label value out of range, an image whose size
        # differs from its label's): the message names the file.
        print(f"error: {_first_data_error_line(e.message)}", file=sys.stderr)
        return 2
    except tf.errors.DataLossError as e:
        # A --tfrecords shard whose bytes changed after it was written (the CRC TensorFlow checks).
        print(f"error: --tfrecords: a shard is damaged ({op_error_reason(e)}); "
              f"python -m psp_tf.data.check --dataset tfrecord --data_dir DIR --split S names it",
              file=sys.stderr)
        return 2
    except (MemoryError, tf.errors.ResourceExhaustedError) as e:
        print(f"error: {out_of_memory_message(e)}", file=sys.stderr)
        return 2
    except trainer.TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except trainer.Preempted as e:
        print(str(e), file=sys.stderr)
        return trainer.PREEMPTED_EXIT_CODE
    if result.metrics:
        if "table" in result.metrics:
            print(result.metrics["table"])
        print(f"mIoU {result.metrics['miou']:.4f} after {result.step} steps (workdir {result.workdir})")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_absl_flags)
