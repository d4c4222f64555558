"""Glue between the trainer and psp_tf.data / psp_tf.evaluation: training input and evaluation hook."""

from psp_tf.errors import UserError


def _options(config):
    """The --dataset_option key=value pairs as the reader's typed options record."""
    from psp_tf.data.registry import parse_options

    return parse_options(config.dataset, config.dataset_options)


def open_train_data(config):
    """Opens the training split (--dataset/--data_dir/--split, or --tfrecords)."""
    from psp_tf import data

    if config.tfrecords is None:
        return data.open_dataset(config.dataset, config.data_dir, config.split, options=_options(config))
    # --tfrecords DIR --split S reads DIR/S-*.tfrecord + DIR/S.json (psp-write-tfrecords).
    records = data.open_dataset("tfrecord", config.tfrecords, config.split)
    if records.name != config.dataset:
        raise UserError(f"--tfrecords {config.tfrecords} holds {records.name} data but --dataset is "
                        f"{config.dataset}")
    return records


def class_info(config, train_data):
    """PSPNetConfig overrides that give the model the training data's label space."""
    if train_data is None:
        return {}
    return {"num_classes": train_data.num_classes, "class_names": tuple(train_data.class_names),
            "palette": tuple(train_data.palette)}


def make_input_fn(config, train_data):
    """`(input_context, per_replica_batch, start_step) -> tf.data.Dataset` over the training split.

    The data pipeline is a pure function of (seed, step), so a run resumed at step N reads exactly
    the batches an uninterrupted run reads from step N on; each worker reads its own shard.
    """
    from psp_tf import data
    from psp_tf.presets import get_preset

    augment = data.AugmentConfig.for_network(get_preset(config.preset))  # padding in the preset's mean

    def input_fn(input_context, per_replica_batch, start_step):
        del per_replica_batch  # train_pipeline takes the global batch and splits it by input_context
        return data.train_pipeline(train_data, config.crop_size, config.batch_size, config.seed,
                                   augment=augment, start_step=start_step, input_context=input_context)

    return input_fn


def default_evaluate_fn(config, info):
    """Sliding-window evaluation (the author's protocol, single scale + flip) on --eval_split.

    Returns `(inference_model, strategy) -> {'miou', 'pixel_accuracy', 'mean_accuracy' (fractions),
    'table', 'images' (TensorBoard panels of the split's first images)}`, or None under --strategy tpu
    (no evaluation); the split is opened now so that a bad --data_dir or a split without ground truth
    fails before training starts.
    """
    from psp_tf import data

    if config.strategy == "tpu":
        # The protocol's image sizes are only known at run time, which TPU compilation rejects:
        # no evaluation in the run; score <workdir>/model with evaluate.py on a CPU/GPU host.
        return None
    if config.tfrecords is not None:
        eval_data = data.open_dataset("tfrecord", config.tfrecords, config.eval_split)
    elif config.dataset != "synthetic" and config.data_dir is None:
        raise UserError(f"--dataset {config.dataset}: evaluation on --eval_split {config.eval_split} "
                        f"needs --data_dir (or --tfrecords)")
    else:
        eval_data = data.open_dataset(config.dataset, config.data_dir, config.eval_split, options=_options(config))
    if not eval_data.has_labels:
        raise UserError(f"--eval_split {config.eval_split} of {config.dataset} has no ground truth to score; "
                        f"choose a labelled split (e.g. val)")

    def evaluate_fn(model, strategy):
        from psp_tf.evaluation import evaluator, protocol, report
        from psp_tf.training import summaries

        settings = protocol.settings_for(model)  # the author's protocol: scale 1, flip, model's crop
        panels = summaries.EvalPanels(eval_data)
        result = evaluator.evaluate(model, eval_data, settings, strategy=strategy, on_prediction=panels)
        summary = result.summary
        return {"miou": summary["mean_iou"] / 100.0, "pixel_accuracy": summary["pixel_accuracy"] / 100.0,
                "mean_accuracy": summary["mean_accuracy"] / 100.0, "table": report.format_table(summary),
                "images": panels.images}

    return evaluate_fn
