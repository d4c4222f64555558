"""Dataset evaluation under any tf.distribute strategy: images sharded over replicas, confusion matrices
summed across them.

Every replica runs the whole protocol (psp_tf.evaluation.protocol) on its own images; the per-image
result does not depend on the replica, and integer confusion matrices add exactly, so any number of
replicas gives the single-device numbers bit for bit.
"""

import concurrent.futures
import dataclasses
import time

import numpy as np
import tensorflow as tf

from psp_tf.distribute import worker_index
from psp_tf.evaluation import metrics
from psp_tf.evaluation.protocol import as_rgb, protocol_graph


@dataclasses.dataclass
class EvalResult:
    """confusion: int64 [K, K] (rows = ground truth); summary: metrics.summarize(...) or None when the
    split has no labels; num_images; seconds: wall time of the loop."""

    confusion: np.ndarray
    summary: dict
    num_images: int
    seconds: float


def _step_function(model, settings, strategy, num_classes, images_per_replica):
    # The per-replica protocol is traced once for images of any size (input_signature); the outer
    # step may retrace as shapes vary, but then it only re-wraps this function.
    spec = ([tf.TensorSpec([None, None, None], tf.uint8)] * images_per_replica,
            [tf.TensorSpec([None, None], tf.uint8)] * images_per_replica)

    # Not inlined into `step`: optimised on its own, as predict's function is. Inlined, Grappler's
    # dependency optimiser fails on the combined graph ("topological sort failed") and the rewritten
    # graph it leaves keeps more of the protocol's large intermediates alive (--scales ms on 384x512
    # with K = 150 and the tiny network: 6.2 GB peak inlined, 3.4 GB not).
    @tf.function(input_signature=spec, autograph=False, experimental_attributes={"_noinline": True})
    def replica_fn(images, labels):
        # Labels only: the full-size probabilities would be [H, W, K] float32 per image, unused here.
        outputs = protocol_graph(model, [as_rgb(im) for im in images], settings, probabilities=False)
        confusion = tf.zeros([num_classes, num_classes], tf.int64)
        for (pred, _), label in zip(outputs, labels):
            confusion += metrics.confusion_matrix(label, pred, num_classes)
        return [pred for pred, _ in outputs], confusion

    @tf.function(reduce_retracing=True)
    def step(images, labels):
        # A Python lambda, not the tf.function itself: MultiWorkerMirroredStrategy with one local
        # device hands a tf.function its PerReplica arguments without unwrapping them.
        preds, confusion = strategy.run(lambda i, l: replica_fn(i, l), args=(images, labels))
        return preds, strategy.reduce(tf.distribute.ReduceOp.SUM, confusion, axis=None)

    return step


def evaluate(model, dataset, settings, strategy=None, max_images=None, images_per_replica=1,
             on_prediction=None, on_progress=None):
    """Runs the protocol over a dataset split and scores it.

    Args:
      model: PSPNet built under `strategy.scope()` (or any scope for the default strategy).
      dataset: psp_tf.data Dataset (`read(i)`, `names`, `num_classes`, `class_names`, `has_labels`).
      settings: protocol.ProtocolSettings.
      strategy: a tf.distribute.Strategy; None = the current (default) one.
      max_images: evaluate only the first N images.
      images_per_replica: images each replica processes together (their tiles share network batches).
      on_prediction: called as on_prediction(index, labels int32 [H, W]) for every image on this host.
      on_progress: called as on_progress(done, total) after every step.

    Returns:
      EvalResult.
    """
    strategy = strategy or tf.distribute.get_strategy()
    total = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    replicas = strategy.num_replicas_in_sync
    per_step = replicas * images_per_replica
    step = _step_function(model, settings, strategy, dataset.num_classes, images_per_replica)
    confusion = np.zeros([dataset.num_classes] * 2, np.int64)
    start = time.time()
    steps = -(-total // per_step)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # read the next step while this one runs
        pending = pool.submit(_read_step, dataset, 0, per_step, total)
        for s in range(steps):
            batch = pending.result()
            if s + 1 < steps:
                pending = pool.submit(_read_step, dataset, (s + 1) * per_step, per_step, total)
            preds, step_confusion = _run_step(strategy, step, batch, images_per_replica)
            confusion += step_confusion
            if on_prediction is not None:
                for index, pred in preds:
                    on_prediction(index, pred)
            if on_progress is not None:
                on_progress(min((s + 1) * per_step, total), total)
    summary = (metrics.summarize(confusion, dataset.class_names, total) if dataset.has_labels else None)
    return EvalResult(confusion, summary, total, time.time() - start)


def _read_step(dataset, first, count, total):
    """[(index or None, image, label)] for one step; missing slots (past the end) are 1x1 dummies whose
    label is all ignore, so they add nothing to the confusion matrix."""
    out = []
    for index in range(first, first + count):
        if index < total:
            image, label = dataset.read(index)
            if label is None:
                label = np.zeros([0, 0], np.uint8)
            out.append((index, image, label))
        else:
            out.append((None, np.zeros([1, 1, 3], np.uint8),
                        np.full([1, 1], metrics.IGNORE_LABEL, np.uint8)))
    return out


def _run_step(strategy, step, batch, images_per_replica):
    """Feeds replica r the images r·G .. r·G+G-1 of the step; returns ([(index, labels)], confusion)."""

    def value(position):
        def fn(context):
            r = context.replica_id_in_sync_group
            return [tf.constant(batch[r * images_per_replica + g][position])
                    for g in range(images_per_replica)]
        return strategy.experimental_distribute_values_from_function(fn)

    preds, confusion = step(value(1), value(2))
    local = strategy.experimental_local_results(preds)
    results = []
    for replica_preds, first in zip(local, _local_replica_ids(strategy, len(local))):
        for g, pred in enumerate(replica_preds):
            index = batch[first * images_per_replica + g][0]
            if index is not None:
                results.append((index, pred.numpy()))
    return results, confusion.numpy()


def _local_replica_ids(strategy, local):
    """Global replica ids of this worker's `local` replicas, in experimental_local_results order
    (MultiWorkerMirroredStrategy numbers replicas worker by worker)."""
    task = worker_index(strategy)
    return [task * local + i for i in range(local)]
