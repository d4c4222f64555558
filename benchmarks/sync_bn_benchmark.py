"""Sync BN's statistics: two replicas against one device, with Keras' moments and with psp_tf's.

    python benchmarks/sync_bn_benchmark.py [--crops 41,137] [--steps 3] [--batch 4]

Two parts, each for Keras' synchronized moments (var = E[x²] − E[x]², one round of sums) and for
psp_tf.layers.SyncBatchNormalization's (the variance about the all-reduced mean, a second round):
- moments: the variance error against float64 on activations of std 1 at channel means 0, 10, 100,
  1000 (the cancellation cases), the batch split over two replicas;
- training: psp_tf's trainer on the `tiny` PSPNet with sync BN (aux head, no dropout), `--steps`
  steps on the same synthetic batches, under MirroredStrategy over two logical CPUs (half the batch
  each) and under the default strategy (one device); the relative difference of the last loss and the
  largest weight difference over the weight's update.
Two replicas compute what one device computes, so both differences measure summation order alone.
Prints one JSON line per crop. Logical devices exist only before TensorFlow starts: run it alone.
"""

import argparse
import io
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from inference_benchmark import cpu_name  # noqa: E402
from psp_tf import build_pspnet, layers  # noqa: E402
from psp_tf.training import TrainConfig, trainer  # noqa: E402

MOMENTS = {"keras": keras.layers.BatchNormalization._moments, "psp_tf": layers.SyncBatchNormalization._moments}


def part_moments(strategy):
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (4, 16, 16, 4)) + np.array([0.0, 10.0, 100.0, 1000.0])).astype(np.float32)
    exact = x.astype(np.float64).var((0, 1, 2))
    halves = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(x[context.replica_id_in_sync_group::2]))
    result = {}
    for name, moments in MOMENTS.items():
        layer = layers.SyncBatchNormalization()
        layer.build(x.shape)
        variance = strategy.run(tf.function(lambda h: moments(layer, h, None)[1]), args=(halves,))
        got = strategy.experimental_local_results(variance)[0].numpy()
        result[f"{name}_variance_rel_error"] = [float(f"{v:.2e}") for v in np.abs(got - exact) / exact]
    return result


def input_fn_for(crop, seed=3):
    """The same global batches for any replica count: step s's images from (s, seed), a spatial label
    (bright-red blobs against the rest, an ignored border); replica r takes rows [r·b, (r+1)·b)."""

    def input_fn(context, batch, start_step):
        replicas = context.num_replicas_in_sync if context else 1

        def per_replica(step):
            key = tf.stack([tf.cast(step, tf.int64), tf.constant(seed, tf.int64)])
            images = tf.random.stateless_uniform([batch * replicas, crop, crop, 3], key, 0, 255)
            smooth = tf.nn.avg_pool2d(images, 9, 1, "SAME")
            labels = tf.cast(smooth[..., 0] > smooth[..., 1], tf.int32) + tf.cast(smooth[..., 2] > 140, tf.int32)
            labels = tf.pad(labels[:, 2:-2, 2:-2], [[0, 0], [2, 2], [2, 2]], constant_values=255)
            return tf.data.Dataset.from_tensor_slices((tf.reshape(images, [replicas, batch, crop, crop, 3]),
                                                       tf.reshape(labels, [replicas, batch, crop, crop])))

        return tf.data.Dataset.range(start_step, 1 << 40).flat_map(per_replica)

    return input_fn


def train(strategy, crop, steps, batch):
    """The library's trainer (tiny, sync BN, aux head, no dropout): (last loss, {path: weights}, start)."""
    if strategy == "mirrored":
        # A second MirroredStrategy in one process would reuse the first's collective keys, which the
        # executor bound to the first's devices; TensorFlow's own tests move the base on the same way.
        tf.distribute.MirroredStrategy._collective_key_base += 100000
    config = TrainConfig(workdir=tempfile.mkdtemp(), steps=steps, batch_size=batch, strategy=strategy,
                         sync_bn=True, crop_size=(crop, crop), checkpoint_every=steps, lr=0.01)
    keras.utils.set_random_seed(0)  # the trainer's --seed 0 initialisation, for the start below
    start = {v.path: v.numpy() for v in build_pspnet("tiny", aux_head=True, input_size=crop, dropout=0.0).weights}
    result = trainer.train(config, input_fn=input_fn_for(crop), evaluate_fn=False,
                           model_overrides={"dropout": 0.0}, stream=io.StringIO())
    shutil.rmtree(config.workdir)
    return result.loss, {v.path: v.numpy() for v in result.model.weights}, start


def part_training(crop, steps, batch):
    """Default strategy (one device) against MirroredStrategy over the two logical CPUs."""
    result = {}
    for name, moments in MOMENTS.items():
        layers.SyncBatchNormalization._moments = moments
        one_loss, one, start = train("default", crop, steps, batch)
        two_loss, two, _ = train("mirrored", crop, steps, batch)
        ratios = {p: np.abs(one[p] - two[p]).max() / np.abs(one[p] - start[p]).max()
                  for p in one if "seed_generator" not in p and np.abs(one[p] - start[p]).max() > 0}
        worst = max(ratios, key=ratios.get)
        result[f"{name}_loss_rel_diff"] = float(f"{abs(one_loss - two_loss) / abs(one_loss):.2e}")
        result[f"{name}_worst_weight_diff_over_update"] = float(f"{ratios[worst]:.2e}")
        result[f"{name}_worst_weight"] = worst
    layers.SyncBatchNormalization._moments = MOMENTS["psp_tf"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", default="41,137", help="training crops (each must suit the pyramid bins)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="global batch (even: two replicas share it)")
    args = parser.parse_args()
    moments = part_moments(tf.distribute.MirroredStrategy())
    print(json.dumps({"part": "moments", **moments, "cpu": cpu_name()}), flush=True)
    for crop in (int(c) for c in args.crops.split(",")):
        print(json.dumps({"part": "training", "crop": crop, "steps": args.steps, "batch": args.batch,
                          **part_training(crop, args.steps, args.batch), "cpu": cpu_name()}), flush=True)


if __name__ == "__main__":
    main()
