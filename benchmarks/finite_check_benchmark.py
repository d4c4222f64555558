"""Cost of the per-step "every checkpointed variable is finite" check on a full-size network.

Builds the preset's training model (aux head) and an SGD-momentum optimizer, then times the fused
reduction the train step runs after each update (`psp_tf.training.checkpoints.all_finite` over the
weights, BN statistics and momentum slots) as its own tf.function, and one forward pass of a crop
for scale. The check reads every variable once: expect memory-bandwidth time, a small fraction of a
training step (which also runs the backward pass and the update).

    python benchmarks/finite_check_benchmark.py [--preset pspnet101_cityscapes] [--repeats 20]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from psp_tf import build_pspnet  # noqa: E402
from psp_tf.training import checkpoints  # noqa: E402


class _State:
    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer


def _best_of(fn, repeats):
    fn()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="pspnet101_cityscapes")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = build_pspnet(args.preset, aux_head=True)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    variables = checkpoints.checked_variables(_State(model, optimizer))
    values = sum(int(np.prod(v.shape)) for v in variables)
    check = tf.function(lambda: checkpoints.all_finite(variables))
    seconds = _best_of(lambda: bool(check()), args.repeats)
    crop = model.psp_config.crop_size
    image = tf.random.uniform([1, *crop, 3], 0, 255)
    forward = tf.function(lambda: model(image, training=False)[0])
    forward_seconds = _best_of(lambda: forward().numpy(), max(1, args.repeats // 10))
    print(f"{args.preset}: {len(variables)} variables, {values / 1e6:.1f}M values; finite check "
          f"{seconds * 1e3:.1f} ms; one {crop[0]}x{crop[1]} forward pass (batch 1) {forward_seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
