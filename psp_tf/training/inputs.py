"""Glue between the trainer and psp_tf.data / psp_tf.evaluation: the resolved run, training input and
evaluation hook."""

import dataclasses

from psp_tf import data
from psp_tf.data import registry
from psp_tf.data.config import AugmentConfig
from psp_tf.distribute import accelerator_visible
from psp_tf.errors import UserError
from psp_tf.evaluation import evaluator, protocol, report
from psp_tf.presets import get_preset
from psp_tf.training import summaries


def _options(config):
    """The --dataset_option key=value pairs as the reader's typed options record."""
    return registry.parse_options(config.dataset, config.dataset_options)


def open_train_data(config):
    """Opens the training split (--dataset/--data_dir/--split, or --tfrecords)."""
    if config.tfrecords is None:
        return data.open_dataset(config.dataset, config.data_dir, config.split, options=_options(config))
    # --tfrecords DIR --split S reads DIR/S-*.tfrecord + DIR/S.json (psp-write-tfrecords).
    records = data.open_dataset("tfrecord", config.tfrecords, config.split)
    if records.name != config.dataset:
        raise UserError(f"--tfrecords {config.tfrecords} holds {records.name} data but --dataset is "
                        f"{config.dataset}")
    return records


def first_undecodable_image(config):
    """The message naming the first training example that does not read (None when all do).

    The tf.data pipeline decodes in its graph, where a file that is not an image, or a truncated one,
    fails inside TensorFlow's decoder with a message that names no file; the host reader names it.
    Called only after such a failure: it reads the split in order until one fails.

    Args:
      config: the TrainConfig after `config.resolve`.
    """
    train_data = open_train_data(config)
    for i in range(len(train_data)):
        try:
            train_data.read(i)
        except UserError as e:
            return str(e)
    return None


def label_space(train_data):
    """PSPNetConfig overrides that give the model the training data's label space."""
    if train_data is None:
        return {}
    return {"num_classes": train_data.num_classes, "class_names": tuple(train_data.class_names),
            "palette": tuple(tuple(c) for c in train_data.palette)}


def resolve_run(config, train_data, model_overrides=None):
    """The config with the network that trains and its augmentation resolved: the one record of the run.

    The network is the preset with the flags (--crop_size, --stem) and the training data's label
    space applied; the augmentation is the paper's, padding with that network's mean colour.

    Args:
      config: a TrainConfig after `config.resolve`.
      train_data: the opened training split, or None (a custom input_fn: the preset's label space).
      model_overrides: further PSPNetConfig fields (tests: dropout=0).
    """
    overrides = dict(label_space(train_data), crop_size=config.crop_size, **(model_overrides or {}))
    if config.stem:
        overrides["stem"] = config.stem
    network = get_preset(config.preset, **overrides)
    augment = AugmentConfig.for_network(network).to_dict()
    jit = config.jit_compile if config.jit_compile is not None else default_jit_compile(config.strategy)
    return dataclasses.replace(config, network=network, augment=augment, jit_compile=jit)


def default_jit_compile(strategy):
    """XLA for the train step where it pays: under the default strategy on an accelerator.

    On CPU, compiling the tiny train step took 4x the time of the uncompiled run's 2 steps
    (benchmarks/train_benchmark.py, README), so short CPU runs and the tests would lose; under the
    other strategies the step holds collectives that Keras, too, leaves uncompiled.
    """
    return strategy == "default" and accelerator_visible()


def augment_config(config):
    """The resolved run's AugmentConfig (JSON lists back to tuples)."""
    return AugmentConfig.from_dict(config.augment)


def make_input_fn(config, train_data):
    """`(input_context, per_replica_batch, start_step) -> tf.data.Dataset` over the training split.

    The data pipeline is a pure function of (seed, step), so a run resumed at step N reads exactly
    the batches an uninterrupted run reads from step N on; each worker reads its own shard.
    """
    augment = augment_config(config)

    def input_fn(input_context, per_replica_batch, start_step):
        # train_pipeline splits a global batch by input_context: give it the global batch of the
        # trainer's per-replica batch (one computation of that split: psp_tf.training.trainer).
        replicas = input_context.num_replicas_in_sync if input_context else 1
        return data.train_pipeline(train_data, config.crop_size, per_replica_batch * replicas, config.seed,
                                   augment=augment, start_step=start_step, input_context=input_context)

    return input_fn


def default_evaluate_fn(config, on_progress=None):
    """Sliding-window evaluation (the author's protocol, single scale + flip) on --eval_split.

    Args:
      config: the resolved run.
      on_progress: called as on_progress(done, total) while an evaluation runs (images).

    Returns:
      `(inference_model, strategy) -> {'miou', 'pixel_accuracy', 'mean_accuracy' (fractions),
      'table', 'images' (TensorBoard panels of the split's first images)}`, or None with --eval_split
      none or under --strategy tpu (no evaluation); the split is opened now so that a bad --data_dir
      or a split without ground truth fails before training starts.
    """
    if not config.evaluates:
        return None
    if config.strategy == "tpu":
        # Evaluation's device step is static-shaped, but evaluating inside a TPU run was never run on
        # a TPU, so it stays off there: score <workdir>/model with psp-evaluate (the trainer says so).
        return None
    eval_data = _open_eval_data(config)

    def evaluate_fn(model, strategy):
        settings = protocol.settings_for(model)  # the author's protocol: scale 1, flip, model's crop
        panels = summaries.EvalPanels(eval_data)
        result = evaluator.evaluate(model, eval_data, settings, strategy=strategy, max_images=config.eval_max_images,
                                    on_prediction=panels, on_progress=on_progress)
        summary = result.summary
        return {"miou": summary["mean_iou"] / 100.0, "pixel_accuracy": summary["pixel_accuracy"] / 100.0,
                "mean_accuracy": summary["mean_accuracy"] / 100.0, "table": report.format_table(summary),
                "images": panels.images}

    return evaluate_fn


def _open_eval_data(config):
    if config.tfrecords is not None:
        eval_data = data.open_dataset("tfrecord", config.tfrecords, config.eval_split)
    elif config.dataset != "synthetic" and config.data_dir is None:
        raise UserError(f"--dataset {config.dataset}: evaluation on --eval_split {config.eval_split} "
                        f"needs --data_dir (or --tfrecords), or --eval_split none")
    else:
        eval_data = data.open_dataset(config.dataset, config.data_dir, config.eval_split, options=_options(config))
    if not eval_data.has_labels:
        raise UserError(f"--eval_split {config.eval_split} of {config.dataset} has no ground truth to score; "
                        f"choose a labelled split (e.g. val)")
    return eval_data
