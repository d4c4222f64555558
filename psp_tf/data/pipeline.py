"""tf.data pipelines: the deterministic, resumable, shardable training stream and the evaluation source.

The training stream is a pure function of (seed, position) (psp_tf.data.positions): position p of
the global example stream is example perm_e[p mod N] of epoch e = p div N, augmented with a
stateless seed keyed on (seed, p). Starting at step N therefore only changes the first position, and
every input pipeline of a distributed run computes its own slice of each global batch. Each dataset
reads its examples at those positions as its storage allows (`Dataset.tf_stream`).
"""

import tensorflow as tf

from psp_tf.data import augment as augment_lib
from psp_tf.data.base import plain
# example_index and global_positions are re-exported: the stream's position math, under its old address.
from psp_tf.data.positions import StreamSlice, example_index, example_seed, global_positions  # noqa: F401
from psp_tf.errors import UserError
from psp_tf.presets import size_pair


def train_pipeline(dataset, crop_size, batch_size, seed, *, augment, start_step=0,
                   input_context=None, shuffle=True, label_dtype=tf.int32,
                   num_parallel_calls=tf.data.AUTOTUNE, prefetch=2, shuffle_buffer=1024):
    """The training input stream (infinite; take as many steps as you train).

    Args:
      dataset: a Dataset from `open_dataset` with ground truth.
      crop_size: int or (h, w) crop.
      batch_size: global batch size (summed over replicas).
      seed: int; the stream is a pure function of (seed, step).
      augment: AugmentConfig, with the network's mean: `AugmentConfig.for_network(network)` is the
        paper's (scale 0.5-2, rotate +-10 degrees, blur p=0.5, mirror, mean/255 padding, random
        crop); `AugmentConfig.none(mean)` centre crops only.
      start_step: first global step to produce: a run resumed at step N sees exactly the batches
        an uninterrupted run sees from step N (nothing is decoded for the skipped steps).
      input_context: tf.distribute.InputContext (from distribute_datasets_from_function): this
        pipeline yields per-replica batches of its slice of every global batch.
      shuffle: reshuffle the examples every epoch (False: dataset order).
      label_dtype: tf.int32 or tf.uint8.
      num_parallel_calls: parallelism of decode + augmentation (order stays deterministic).
      prefetch: batches to prefetch.
      shuffle_buffer: shuffle buffer of a `tfrecord` dataset (index-based datasets are shuffled
        exactly by a per-epoch permutation instead).
    Returns:
      tf.data.Dataset of (image float32 [b, h, w, 3] RGB 0..255, label [b, h, w] label_dtype),
      b = the per-replica batch size (= batch_size without input_context).
    Raises:
      UserError: a split without ground truth, or a bad batch size.
    """
    if not dataset.has_labels:
        raise UserError(f"{dataset.name} {dataset.split} has no ground truth to train on")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} must be positive")
    crop = size_pair(crop_size)
    stream_slice = StreamSlice.of(batch_size, input_context, start_step)

    def finish(position, image, label):
        image, label = augment_lib.augment_example(image, label, crop, example_seed(position, seed), augment)
        return image, tf.cast(label, label_dtype)

    stream = dataset.tf_stream(stream_slice, seed, shuffle, num_parallel_calls, shuffle_buffer)
    stream = stream.map(plain(finish), num_parallel_calls=num_parallel_calls, deterministic=True)
    return stream.batch(stream_slice.per_replica, drop_remainder=True).prefetch(prefetch)


def eval_source(dataset, input_context=None, num_parallel_calls=tf.data.AUTOTUNE):
    """Full-size examples one at a time, in dataset order, for sliding-window evaluation.

    Args:
      dataset: a Dataset from `open_dataset`.
      input_context: optional tf.distribute.InputContext; pipeline i gets examples i, i + n, ...
      num_parallel_calls: decode parallelism (order is kept).
    Returns:
      tf.data.Dataset of (image uint8 [H, W, 3], label uint8 [H, W] train ids, 255 = ignore
      ([0, 0] when the split has no ground truth: check `dataset.has_labels`), name tf.string
      (the image's file stem)).
    """
    if input_context is None:
        return dataset.tf_examples(num_parallel_calls=num_parallel_calls).prefetch(2)
    return dataset.tf_examples(input_context.num_input_pipelines, input_context.input_pipeline_id,
                               num_parallel_calls).prefetch(2)
