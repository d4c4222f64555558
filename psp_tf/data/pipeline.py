"""tf.data pipelines: the deterministic, resumable, shardable training stream and the evaluation source.

The training stream is a pure function of (seed, position): position p of the global example
stream is example perm_e[p mod N] of epoch e = p div N (perm_e a stateless shuffle keyed on
(seed, e)), augmented with a stateless seed keyed on (seed, p). Starting at step N therefore only
changes the first position (no decoding to skip), and every input pipeline of a distributed run
computes its own slice of each global batch.
"""

import tensorflow as tf

from psp_tf.data import augment as augment_lib
from psp_tf.data import tfrecords
from psp_tf.errors import UserError
from psp_tf.presets import size_pair

# Salts keeping the permutation and augmentation random streams apart.
_PERMUTATION_SALT = 0x5053_5031
_AUGMENT_SALT = 0x5053_5032


def _plain(fn):
    """Marks a map function as plain TF ops: autograph has nothing to convert (and misreads closures)."""
    return tf.autograph.experimental.do_not_convert(fn)


def _shard_layout(batch_size, input_context):
    """(per-replica batch b, pipelines n, this pipeline's index i, replicas per pipeline k)."""
    if input_context is None:
        return batch_size, 1, 0, 1
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    replicas = input_context.num_replicas_in_sync
    if replicas % n:
        raise UserError(f"{replicas} replicas do not divide over {n} input pipelines")
    if batch_size % replicas:
        raise UserError(f"batch size {batch_size} does not divide over {replicas} replicas")
    return input_context.get_per_replica_batch_size(batch_size), n, i, replicas // n


def global_positions(local, per_replica, pipelines, pipeline_id, replicas_per_pipeline):
    """Maps this pipeline's local example counter to positions of the global example stream.

    A global step holds pipelines * k per-replica batches of b examples; pipeline i feeds its k
    replicas batches t = s*k .. s*k + k - 1, i.e. replica slot i*k + t mod k of global step s.
    """
    b, k = per_replica, replicas_per_pipeline
    t, q = local // b, local % b
    step, slot = t // k, pipeline_id * k + t % k
    return step * (pipelines * k * b) + slot * b + q


def example_index(position, num_examples, seed, shuffle=True):
    """The dataset index at a global stream position: a fresh stateless permutation every epoch."""
    if not shuffle:
        return position % num_examples
    epoch = position // num_examples
    key = tf.stack([tf.constant(seed ^ _PERMUTATION_SALT, tf.int64), epoch])
    perm = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), key)
    return tf.gather(perm, position % num_examples)


def example_seed(position, seed):
    """int64 [2] augmentation seed of a global stream position."""
    return tf.stack([tf.constant(seed ^ _AUGMENT_SALT, tf.int64), position])


def train_pipeline(dataset, crop_size, batch_size, seed, *, augment=None, start_step=0,
                   input_context=None, shuffle=True, label_dtype=tf.int32,
                   num_parallel_calls=tf.data.AUTOTUNE, prefetch=2, shuffle_buffer=1024):
    """The training input stream (infinite; take as many steps as you train).

    Args:
      dataset: a Dataset from `open_dataset` with ground truth.
      crop_size: int or (h, w) crop.
      batch_size: global batch size (summed over replicas).
      seed: int; the stream is a pure function of (seed, step).
      augment: AugmentConfig (default: the paper's: scale 0.5-2, rotate +-10 degrees, blur p=0.5,
        mirror, mean/255 padding, random crop); `AugmentConfig.none()` for centre crops only.
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
    config = augment or augment_lib.AugmentConfig()
    b, n, i, k = _shard_layout(batch_size, input_context)

    def finish(position, image, label):
        image, label = augment_lib.augment_example(image, label, crop, example_seed(position, seed), config)
        return image, tf.cast(label, label_dtype)

    if isinstance(dataset, tfrecords.TFRecordDataset):
        stream = _record_stream(dataset, seed, shuffle, start_step * n * k * b, (b, n, i, k),
                                shuffle_buffer)
        stream = stream.map(_plain(finish), num_parallel_calls=num_parallel_calls, deterministic=True)
    else:
        num_examples, load = len(dataset), dataset.tf_loader()

        def make_example(local):
            position = global_positions(local, b, n, i, k)
            return finish(position, *load(example_index(position, num_examples, seed, shuffle)))

        stream = tf.data.Dataset.range(tf.constant(start_step * k * b, tf.int64), tf.int64.max)
        stream = stream.map(_plain(make_example), num_parallel_calls=num_parallel_calls, deterministic=True)
    return stream.batch(b, drop_remainder=True).prefetch(prefetch)


def _record_stream(dataset, seed, shuffle, first_position, layout, shuffle_buffer):
    """(position, image, label) from TFRecord shards, from global stream position `first_position`.

    TFRecords have no random access, so an epoch is: shards in a stateless order keyed on
    (seed, epoch), interleaved, then a shuffle buffer seeded from (seed, epoch). Resuming starts at
    the right epoch and skips raw records within it (no decoding); each input pipeline reads the
    stream and keeps its own positions.
    """
    b, n, i, k = layout
    num_examples = len(dataset)
    files = tf.constant(dataset.files)
    first_epoch = first_position // num_examples

    def epoch(e):
        order = tf.range(tf.size(files))
        if shuffle:
            key = tf.stack([tf.constant(seed ^ _PERMUTATION_SALT, tf.int64), e])
            order = tf.random.experimental.stateless_shuffle(order, key)
        records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order)).interleave(
            tf.data.TFRecordDataset, cycle_length=min(4, len(dataset.files)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:
            # shuffle() takes only a Python seed inside a plain (non-autograph) function; the buffer
            # pattern repeats each epoch, but the epoch's shard order above differs, so the order does.
            records = records.shuffle(shuffle_buffer, seed=(seed * 1000003) % 2**31)
        return records.enumerate().map(_plain(lambda j, r: (e * num_examples + j, r)))

    stream = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(_plain(epoch))
    stream = stream.skip(first_position - first_epoch * num_examples)
    if n > 1:
        step_examples = n * k * b
        stream = stream.filter(_plain(lambda p, r: (p % step_examples) // (k * b) == i))
    return stream.map(_plain(lambda p, r: (p, *tfrecords.parse_record(r, True)[:2])))


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
    sharded = input_context is not None and input_context.num_input_pipelines > 1
    if isinstance(dataset, tfrecords.TFRecordDataset):
        records = dataset.tf_records()
        if sharded:
            records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        parse = lambda r: tfrecords.parse_record(r, dataset.has_labels)  # noqa: E731
        return records.map(_plain(parse), num_parallel_calls=num_parallel_calls, deterministic=True).prefetch(2)
    load = dataset.tf_loader()
    names = tf.constant(dataset.names)
    indices = tf.data.Dataset.range(len(dataset))
    if sharded:
        indices = indices.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    def make(index):
        image, label = load(index)
        return image, label, names[index]

    return indices.map(_plain(make), num_parallel_calls=num_parallel_calls, deterministic=True).prefetch(2)
