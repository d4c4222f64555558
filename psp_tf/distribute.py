"""The tf.distribute strategy for --strategy (train.py and evaluate.py), and each worker's rank.

default: the current device (CPU or one GPU). mirrored: every local GPU (or the logical CPU devices a
test configured). multiworker: MultiWorkerMirroredStrategy from TF_CONFIG. tpu: TPUStrategy on --tpu.

TF_CONFIG is read by TensorFlow's own TFConfigClusterResolver (the one MultiWorkerMirroredStrategy
uses), never parsed here. TensorFlow is imported inside the two functions that need it: the configs
read STRATEGIES before TensorFlow starts (a driver's --help and a bad flag answer without it).
"""

import os

from psp_tf.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")  # --strategy's choices, for every tool


def accelerator_visible() -> bool:
    """Whether TensorFlow sees a GPU or TPU: where XLA-compiled steps are the default.

    On the 2-core CPUs this project is built on, XLA made neither the train step nor evaluation's
    network step faster (README, Measured figures), so a CPU-only host runs them uncompiled.
    """
    import tensorflow as tf  # see the module docstring

    return any(d.device_type in ("GPU", "TPU") for d in tf.config.list_physical_devices())


def make_strategy(name, tpu=None):
    """Creates the strategy (before any model variable exists).

    Args:
      name: 'default', 'mirrored', 'multiworker' or 'tpu'.
      tpu: the TPU name for TPUClusterResolver ('local' on a TPU VM).

    Raises:
      UserError: multiworker without a usable TF_CONFIG, or a TPU that cannot be reached.
    """
    import tensorflow as tf  # see the module docstring

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        # No GPU: mirror over the logical CPU devices (MirroredStrategy() alone would take CPU:0 only).
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, OSError, RuntimeError, tf.errors.OpError) as e:  # URLError is an OSError
            raise UserError(f"--strategy tpu (--tpu {tpu or 'local'}): no TPU found "
                            f"({str(e).strip().splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"--strategy {name!r} must be one of {', '.join(STRATEGIES)}")


def cluster_resolver():
    """TFConfigClusterResolver over the TF_CONFIG environment variable (an empty cluster without it).

    Raises:
      UserError: TF_CONFIG is not JSON, or its cluster is not lists of addresses.
    """
    import tensorflow as tf  # see the module docstring

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    try:
        resolver.cluster_spec()  # where TensorFlow parses TF_CONFIG
    except (ValueError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not valid ({str(e).splitlines()[0]})") from None
    return resolver


def num_workers() -> int:
    """The processes TF_CONFIG's cluster runs the job on (its chief and workers; 1 without TF_CONFIG)."""
    cluster = cluster_resolver().cluster_spec().as_dict()
    return max(1, sum(len(cluster.get(job, ())) for job in ("chief", "worker")))


def _check_tf_config():
    if not os.environ.get("TF_CONFIG"):
        raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                        "(cluster.worker addresses and this process's task)")
    resolver = cluster_resolver()
    workers = resolver.cluster_spec().as_dict().get("worker", [])
    if not workers or resolver.task_type is None or resolver.task_id is None:
        raise UserError("TF_CONFIG is not valid for --strategy multiworker: it needs cluster.worker (the "
                        "addresses) and task.type and task.index (this process)")
    if resolver.task_type == "worker" and not 0 <= resolver.task_id < len(workers):
        raise UserError(f"TF_CONFIG task index {resolver.task_id} is outside the {len(workers)} workers")


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints, the config, logs and TensorBoard (worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def worker_index(strategy) -> int:
    """This worker's rank among all workers (0 outside multi-worker runs).

    MultiWorkerMirroredStrategy numbers a 'chief' task first, then the 'worker' tasks, and its replicas
    worker by worker in that order.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0
    if resolver.task_type == "chief":
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return int(resolver.task_id or 0) + (1 if has_chief else 0)
