"""Dataset evaluation under any tf.distribute strategy: tiles on the replicas, confusion summed on the host.

The images of this worker stream through psp_tf.evaluation.stream: their tiles fill the fixed-size
batches of the compiled device step (psp_tf.evaluation.tile_step), whose replicas each take one
contiguous block of the batch; resize, tiling, blending and scoring run on the host. A tile's result
does not depend on the number of replicas (each replica sees the batch the single-device run would
give it), and integer confusion matrices add exactly, so any number of replicas gives the
single-device numbers bit for bit. With several workers, worker w takes images w, w + W, ...; their
confusion matrices are summed across workers once, at the end.
"""

import concurrent.futures
import dataclasses
import time

import numpy as np
import tensorflow as tf

from psp_tf.distribute import worker_index
from psp_tf.evaluation import metrics
from psp_tf.evaluation.stream import Engine
from psp_tf.evaluation.tile_step import local_replica_count


@dataclasses.dataclass
class EvalResult:
    """confusion: int64 [K, K] (rows = ground truth); summary: metrics.summarize(...) or None when the
    split has no labels; num_images; seconds: wall time of the loop."""

    confusion: np.ndarray
    summary: dict
    num_images: int
    seconds: float


def evaluate(model, dataset, settings, strategy=None, max_images=None, on_prediction=None, on_progress=None):
    """Runs the protocol over a dataset split and scores it.

    Args:
      model: PSPNet built under `strategy.scope()` (or any scope for the default strategy).
      dataset: psp_tf.data Dataset (`read(i)`, `names`, `num_classes`, `class_names`, `has_labels`).
      settings: protocol.ProtocolSettings (its batch_size: network inputs per replica and step).
      strategy: a tf.distribute.Strategy; None = the current (default) one.
      max_images: evaluate only the first N images.
      on_prediction: called as on_prediction(index, labels int32 [H, W]) for every image on this worker.
      on_progress: called as on_progress(done, total) after every device batch; `done` counts the
        images of this worker done, with the share of the ones in flight (so an ETA moves within a
        multi-scale image).

    Returns:
      EvalResult.
    """
    strategy = strategy or tf.distribute.get_strategy()
    total = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    workers = strategy.num_replicas_in_sync // local_replica_count(strategy)
    mine = list(range(worker_index(strategy), total, workers))
    engine = Engine(model, settings, strategy)
    confusion = np.zeros([dataset.num_classes] * 2, np.int64)
    labels = {}
    start = time.time()
    progress = None if on_progress is None else (lambda done: on_progress(round(done, 2), len(mine)))
    for index, pred, _ in engine.run(_read_ahead(dataset, mine, labels), on_progress=progress):
        label = labels.pop(index)
        if label is not None:
            confusion += metrics.confusion_matrix(label, pred, dataset.num_classes).numpy()
        if on_prediction is not None:
            on_prediction(index, pred)
    confusion = _sum_over_workers(strategy, confusion) if workers > 1 else confusion
    summary = (metrics.summarize(confusion, dataset.class_names, total) if dataset.has_labels else None)
    return EvalResult(confusion, summary, total, time.time() - start)


def _read_ahead(dataset, indices, labels):
    """(index, image) for `indices`, the next image read while this one runs; labels go to `labels`."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(dataset.read, indices[0]) if indices else None
        for k, index in enumerate(indices):
            image, label = pending.result()
            if k + 1 < len(indices):
                pending = pool.submit(dataset.read, indices[k + 1])
            labels[index] = label
            yield index, image


def _sum_over_workers(strategy, confusion):
    """The confusion matrices of all workers, summed (one all-reduce; each worker's first replica
    contributes its matrix, the other replicas zeros)."""
    first = worker_index(strategy) * local_replica_count(strategy)

    def value(context):
        mine = context.replica_id_in_sync_group == first
        return tf.constant(confusion if mine else np.zeros_like(confusion))

    values = strategy.experimental_distribute_values_from_function(value)
    reduce = tf.function(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM,
                                                   strategy.run(tf.identity, args=(v,)), axis=None))
    return reduce(values).numpy()
