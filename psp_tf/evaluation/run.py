"""One evaluation run from an EvalConfig: model, dataset, strategy -> evaluation -> report and files.

`evaluate(EvalConfig(...))` is what `evaluate.py` / `psp-evaluate` run (psp_tf/cli/evaluate.py) and
what tests and notebooks call.
"""

import contextlib
import datetime
import json
import os
import socket

from psp_tf import visualize
from psp_tf.distribute import make_strategy, num_workers
from psp_tf.errors import UserError
from psp_tf.model_dir import load_model, weights_digest
from psp_tf.outputs import absolute, atomic_directory, refuse_overlap, safe_name
from psp_tf.progress import Progress
from psp_tf.evaluation import evaluator, protocol, report


def _open(config, preset):
    from psp_tf.data.registry import open_dataset, parse_options  # the readers pull in cv2 and TF I/O

    name = config.dataset or preset.dataset
    split = config.split or (preset.paper.split if preset.paper else "val")
    dataset = open_dataset(name, config.data_dir, split, options=parse_options(name, config.dataset_options))
    if dataset.num_classes != preset.num_classes:
        raise UserError(f"--dataset {name} has {dataset.num_classes} classes but --weights "
                        f"{config.weights} (preset {preset.name}) predicts {preset.num_classes}")
    if config.cityscapes_submission and name != "cityscapes":
        raise UserError("--cityscapes_submission needs --dataset cityscapes")
    return dataset


def _check_outputs(config):
    outputs = [("--output_dir", config.output_dir), ("--show_dir", config.show_dir)]
    refuse_overlap([o for o in outputs if o[1]], [("--weights", config.weights), ("--data_dir", config.data_dir)])
    if (config.output_dir or config.show_dir) and num_workers() > 1:
        # Each worker predicts only its own images; one atomic output directory per worker would race.
        raise UserError("--output_dir with several workers (TF_CONFIG) is not supported: each worker "
                        "would hold only its own images; evaluate without --output_dir or on one worker")


def evaluate(config, log=print):
    """Runs one evaluation; returns the exit status (0, or 1 when --expect paper fails).

    Raises:
      UserError: bad weights, dataset or images (nothing is left in --output_dir / --show_dir).
    """
    _check_outputs(config)
    strategy = make_strategy(config.strategy, config.tpu)
    with strategy.scope():
        model = load_model(config.weights, precision=config.precision)
    preset = model.psp_config
    dataset = _open(config, preset)
    if config.expect and not dataset.has_labels:
        raise UserError(f"--expect paper: {dataset.name} {dataset.split} has no ground truth to score "
                        f"(the published figure of {preset.name} is on '{dataset.split}', a server-scored split)")
    figure = report.paper_figure(preset, dataset.name, dataset.split, config.scales) if config.expect else None
    settings = protocol.settings_for(model, config.scales, config.flip, batch_size=config.batch_size,
                                     compiled=config.jit_compile)
    log(f"{preset.name} on {dataset.name} {dataset.split}: {len(dataset)} images, scales {list(settings.scales)}, "
        f"flip {settings.flip}, crop {settings.crop_size[0]}x{settings.crop_size[1]}, {config.precision}, "
        f"{strategy.num_replicas_in_sync} replica(s)")
    with contextlib.ExitStack() as stack:
        writers = _writers(stack, config, dataset)
        result = evaluator.evaluate(model, dataset, settings, strategy, config.max_images,
                                    on_prediction=writers, on_progress=Progress(len(dataset), unit="img"))
        if config.output_dir:
            _write_results(writers.output_root, config, preset, dataset, settings, result)
            if result.summary is not None:
                writers.pairs_text = report.write_confusion_outputs(writers.output_root, result.confusion,
                                                                    dataset.class_names)
    log(f"{result.num_images} images in {result.seconds:.1f} s ({result.seconds / result.num_images:.2f} s/image)")
    if result.summary is None:
        log(f"split {dataset.split} has no ground truth: predictions only")
        return 0
    log(report.format_table(result.summary))
    if writers.pairs_text:
        log(writers.pairs_text)
    if figure is not None:
        text, ok = report.compare_with_paper(result.summary, figure, config.tolerance)
        log(text)
        return 0 if ok else 1
    return 0


class _Writers:
    """on_prediction for every output asked for: prediction PNGs and the side-by-side pictures."""

    def __init__(self, predictions=None, show=None):
        self.predictions, self.show = predictions, show
        self.output_root = predictions.root if predictions else None
        self.pairs_text = None

    def __call__(self, index, labels):
        if self.predictions is not None:
            self.predictions(index, labels)
        if self.show is not None:
            self.show(index, labels)


class _ShowWriter:
    """`<name>.png` per image in a staging directory of --show_dir (visualize.write_show_image)."""

    def __init__(self, root, dataset, limit):
        self.root, self.dataset, self.limit = root, dataset, limit
        where = getattr(dataset, "metadata_path", None) or f"{dataset.name} dataset"
        self.names = [safe_name(n, f"{where}: image {i} name") for i, n in enumerate(dataset.names)]

    def __call__(self, index, labels):
        if self.limit is not None and index >= self.limit:
            return
        # Read again rather than held by the evaluator: only the --show_max images need it.
        image, label = self.dataset.read(index)
        path = os.path.join(self.root, self.names[index] + ".png")
        # recover=False: the staging directory is new and swept once; no per-file recovery needed.
        visualize.write_show_image(path, image, label, labels, self.dataset.palette, self.dataset.class_names,
                                   recover=False)


def _writers(stack, config, dataset):
    predictions = show = None
    if config.output_dir:
        tmp = stack.enter_context(atomic_directory(config.output_dir, config.overwrite, flag="--output_dir"))
        predictions = report.PredictionWriter(tmp, dataset, config.cityscapes_submission)
    if config.show_dir:
        tmp = stack.enter_context(atomic_directory(config.show_dir, config.overwrite, flag="--show_dir"))
        show = _ShowWriter(tmp, dataset, config.show_max)
    return _Writers(predictions, show)


def _write_results(directory, config, preset, dataset, settings, result):
    results = dict(result.summary or {})
    results.update({
        "preset": preset.name,
        "dataset": dataset.name,
        "split": dataset.split,
        "settings": {"scales": list(settings.scales), "flip": settings.flip,
                     "crop_size": list(settings.crop_size), "base_size": settings.base_size,
                     "batch_size": settings.batch_size, "jit_compile": settings.compiled,
                     "precision": config.precision, "strategy": config.strategy,
                     "max_images": config.max_images},
        "weights": absolute(config.weights),
        "weights_sha256": weights_digest(config.weights),
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
