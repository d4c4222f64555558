"""The body of evaluate.py: flags -> model, dataset, strategy -> evaluation -> report and files.

Kept out of the absl driver so that tests can call it with a plain namespace of flag values.
"""

import datetime
import hashlib
import json
import os
import socket

from psp_tf import checks
from psp_tf.distribute import make_strategy
from psp_tf.errors import UserError
from psp_tf.outputs import atomic_directory, refuse_overlap
from psp_tf.evaluation import evaluator, protocol, report


def weights_digest(directory):
    """sha256 over the file names and contents of a weights directory."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _open(flags, config):
    from psp_tf.data.registry import open_dataset, parse_options

    name = flags.dataset or config.dataset
    split = flags.split or (config.paper.split if config.paper else "val")
    dataset = open_dataset(name, flags.data_dir, split, options=parse_options(name, flags.dataset_option))
    if dataset.num_classes != config.num_classes:
        raise UserError(f"--dataset {name} has {dataset.num_classes} classes but --weights "
                        f"{flags.weights} (preset {config.name}) predicts {config.num_classes}")
    if flags.cityscapes_submission and name != "cityscapes":
        raise UserError("--cityscapes_submission needs --dataset cityscapes")
    return dataset


def _num_workers():
    """Tasks in TF_CONFIG's cluster (1 without TF_CONFIG)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        raise UserError("TF_CONFIG is not valid JSON") from None
    return max(1, sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker")))


def evaluate_from_flags(flags, log=print):
    """Runs evaluate.py; returns the exit status (0, or 1 when --expect paper fails).

    Raises:
      UserError: bad flags, weights, dataset or images (nothing is left in --output_dir).
    """
    from psp_tf.model_dir import load_model

    scales = protocol.parse_scales(flags.scales)
    # evaluate.py's absl validators check these while parsing; callers with a plain namespace get
    # the same rules (psp_tf.checks).
    checks.check("batch_size", flags.batch_size, checks.POSITIVE_INT)
    checks.check("max_images", flags.max_images, checks.POSITIVE_INT, allow_none=True)
    checks.check("tolerance", flags.tolerance, checks.NON_NEGATIVE)
    if getattr(flags, "tpu", None) and flags.strategy != "tpu":
        raise UserError(f"--tpu={flags.tpu!r} needs --strategy tpu (got --strategy {flags.strategy})")
    refuse_overlap([("--output_dir", flags.output_dir)],
                   [("--weights", flags.weights), ("--data_dir", flags.data_dir)])
    strategy = make_strategy(flags.strategy, getattr(flags, "tpu", None))
    with strategy.scope():
        model = load_model(flags.weights, precision=flags.precision)
    config = model.psp_config
    dataset = _open(flags, config)
    if flags.expect and not dataset.has_labels:
        raise UserError(f"--expect paper: {dataset.name} {dataset.split} has no ground truth to score "
                        f"(the published figure of {config.name} is on '{dataset.split}', a server-scored split)")
    if flags.output_dir and _num_workers() > 1:
        # Each worker predicts only its own images; one atomic --output_dir per worker would race.
        raise UserError("--output_dir with several workers (TF_CONFIG) is not supported: each worker "
                        "would hold only its own images; evaluate without --output_dir or on one worker")
    figure = report.paper_figure(config, dataset.name, dataset.split, scales) if flags.expect else None
    settings = protocol.settings_for(model, scales, flags.flip, batch_size=flags.batch_size)
    per_replica = max(1, flags.batch_size // 2)
    log(f"{config.name} on {dataset.name} {dataset.split}: {len(dataset)} images, scales {list(scales)}, "
        f"flip {settings.flip}, crop {settings.crop_size[0]}x{settings.crop_size[1]}, {flags.precision}, "
        f"{strategy.num_replicas_in_sync} replica(s)")
    if flags.output_dir:
        with atomic_directory(flags.output_dir, flags.overwrite, flag="--output_dir") as tmp:
            writer = report.PredictionWriter(tmp, dataset, flags.cityscapes_submission)
            result = evaluator.evaluate(model, dataset, settings, strategy, flags.max_images, per_replica,
                                        on_prediction=writer, on_progress=report.Progress())
            _write_results(tmp, flags, config, dataset, settings, result)
    else:
        result = evaluator.evaluate(model, dataset, settings, strategy, flags.max_images, per_replica,
                                    on_progress=report.Progress())
    log(f"{result.num_images} images in {result.seconds:.1f} s ({result.seconds / result.num_images:.2f} s/image)")
    if result.summary is None:
        log(f"split {dataset.split} has no ground truth: predictions only")
        return 0
    log(report.format_table(result.summary))
    if figure is not None:
        text, ok = report.compare_with_paper(result.summary, figure, flags.tolerance)
        log(text)
        return 0 if ok else 1
    return 0


def _write_results(directory, flags, config, dataset, settings, result):
    results = dict(result.summary or {})
    results.update({
        "preset": config.name,
        "dataset": dataset.name,
        "split": dataset.split,
        "settings": {"scales": list(settings.scales), "flip": settings.flip,
                     "crop_size": list(settings.crop_size), "base_size": settings.base_size,
                     "batch_size": settings.batch_size, "precision": flags.precision,
                     "strategy": flags.strategy, "max_images": flags.max_images},
        "weights": os.path.abspath(flags.weights),
        "weights_sha256": weights_digest(flags.weights),
        "confusion_matrix": result.confusion.tolist(),
        "num_images": result.num_images,
        "seconds": round(result.seconds, 3),
        "seconds_per_image": round(result.seconds / result.num_images, 4),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "prediction_numbering": "ADE20K 1..150" if dataset.name == "ade20k" else "train ids",
    })
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
