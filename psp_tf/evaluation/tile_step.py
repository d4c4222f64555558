"""The protocol's device step: the network on a fixed batch of crop x crop tiles, compiled with XLA.

The network only ever sees tiles of the crop size (docs/caffe_reference.md §3.3), so everything whose
size varies with the image (MATLAB resize, tiling, blending, the label-size maps) stays on the host
(psp_tf.evaluation.stream) and the device runs one function of static shape: a tile batch
[B, crop_h, crop_w, 3] -> probabilities [B, crop_h, crop_w, K], each tile with its mirror image when
flip is on (summed in logit space, caffe_process.m). Static shapes and no host ops make it one XLA
program, so the same step runs on CPU, GPU and under TPUStrategy.

Under a strategy each replica runs B tiles; a global batch of R·B tiles is cut into R contiguous
blocks, so replica r of step k sees exactly the tiles the single-device run puts into its batch
k·R + r, at the same positions: the results match the single-device run bit for bit.
"""

import numpy as np
import tensorflow as tf

from psp_tf.distribute import worker_index
from psp_tf.evaluation.sliding_window import merge_flip


def tiles_per_batch(settings):
    """Tiles per replica and step: `batch_size` network inputs, a tile and its mirror being two."""
    return max(1, settings.batch_size // 2) if settings.flip else settings.batch_size


def local_replica_count(strategy):
    """Replicas of `strategy` on this worker (the default strategy has one and no device list)."""
    try:
        return len(strategy.extended.worker_devices)
    except RuntimeError:  # "worker_devices() method unsupported by default tf.distribute.Strategy"
        return 1


def with_mirrors(tiles):
    """[B, h, w, 3] -> [2B, h, w, 3]: each tile followed by its left-right mirror image."""
    both = tf.stack([tiles, tf.reverse(tiles, axis=[2])], axis=1)
    return tf.reshape(both, [-1, *tiles.shape[1:]])


def replica_function(model, settings, network=None):
    """The per-replica step as a tf.function of a static [B, crop_h, crop_w, 3] float32 batch.

    Args:
      model: PSPNet (float32 or bfloat16 compute; logits are cast to float32).
      settings: protocol.ProtocolSettings; `compiled` picks XLA (jit_compile=True).
      network: callable batch -> logits used instead of `model` (None: the model itself).

    Returns:
      tf.function: float32 [B, crop_h, crop_w, 3] RGB 0..255 -> float32 [B, crop_h, crop_w, K].
    """
    crop_h, crop_w = settings.crop_size
    spec = tf.TensorSpec([tiles_per_batch(settings), crop_h, crop_w, 3], tf.float32)
    network = network or (lambda x: model(x, training=False))

    def step(tiles):
        inputs = with_mirrors(tiles) if settings.flip else tiles
        return merge_flip(network(inputs), settings.flip)

    return tf.function(step, input_signature=[spec], jit_compile=bool(settings.compiled), autograph=False)


class TileStep:
    """Runs tile batches through the replicas of a strategy; pads the last batch and drops its padding.

    Attributes:
      batch: tiles per call on this worker (tiles per replica x local replicas).
    """

    def __init__(self, model, settings, strategy=None, network=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.per_replica = tiles_per_batch(settings)
        self.local_replicas = local_replica_count(self.strategy)
        self.batch = self.per_replica * self.local_replicas
        self.first_replica = worker_index(self.strategy) * self.local_replicas
        self.crop_size = tuple(settings.crop_size)
        self.replica_fn = replica_function(model, settings, network)

        # A Python lambda, not the tf.function itself: MultiWorkerMirroredStrategy with one local
        # device hands a tf.function its PerReplica arguments without unwrapping them.
        @tf.function(autograph=False)
        def distributed(tiles):
            return self.strategy.run(lambda x: self.replica_fn(x), args=(tiles,))

        self._distributed = distributed

    def __call__(self, tiles):
        """float32 [n, crop_h, crop_w, 3] (n <= batch) -> float32 probabilities [n, crop_h, crop_w, K]."""
        n = len(tiles)
        if n < self.batch:  # the last partial batch: zero tiles, whose results are discarded
            padding = np.zeros([self.batch - n, *self.crop_size, 3], np.float32)
            tiles = np.concatenate([tiles, padding])
        per = self.per_replica

        def block(context):
            r = context.replica_id_in_sync_group - self.first_replica
            return tf.constant(tiles[r * per:(r + 1) * per])

        values = self.strategy.experimental_distribute_values_from_function(block)
        outputs = [o.numpy() for o in self.strategy.experimental_local_results(self._distributed(values))]
        # One replica: its array as it is (a batch of probabilities is ~134 MB at 473, K = 150, and
        # concatenate would copy it once more).
        return (outputs[0] if len(outputs) == 1 else np.concatenate(outputs))[:n]
