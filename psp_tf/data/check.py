"""The check tool's work (psp-check-data): scan a dataset split and report what the network will be fed.

Reports the image count, image sizes, the class pixel histogram and every bad example found (each
one line naming the file), and optionally writes augmented training samples as PNGs (image beside
its label coloured with the dataset palette, ignore = white). `check(config)` returns exit status 1
when problems are found.
"""

import dataclasses
import os
import sys
from typing import List

import cv2
import numpy as np

from psp_tf import visualize
from psp_tf.data import base, pipeline, registry
from psp_tf.data.config import DEFAULT_CROP, AugmentConfig, CheckConfig
from psp_tf.errors import UserError
from psp_tf.outputs import atomic_file, refuse_overlap, require_directory_place
from psp_tf.presets import CAFFE_MEAN_RGB
from psp_tf.progress import Progress

# The samples show what training feeds; every preset pads with the Caffe mean (psp_tf.presets), and the
# tool has no network to take one from.
SAMPLE_MEAN = CAFFE_MEAN_RGB
IGNORE_WHITE = (255, 255, 255)


@dataclasses.dataclass
class Report:
    """What a check found. histogram: pixels per train id 0..K-1, then the ignored (255) pixels."""

    count: int
    histogram: np.ndarray
    min_size: tuple
    max_size: tuple
    problems: List[str]
    listing_problems: int = 0  # the first problems: files of the split's list that did not pair


def scan(dataset, limit=None, progress=False):
    """Reads every example (or the first `limit`) in order, collecting problems instead of stopping."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    histogram = np.zeros(dataset.num_classes + 1, np.int64)
    sizes, problems = [], []
    bar = Progress(n, label="scanned", enabled=progress, lines=0)  # off a terminal the report says enough
    for i, example in enumerate(dataset.examples_in_order(n)):
        bar.update(i + 1)
        if isinstance(example, UserError):
            problems.append(str(example))
            continue
        sizes.append(example.image.shape[:2])
        if example.label is not None:
            counts = np.bincount(example.label.ravel(), minlength=256)
            histogram[:-1] += counts[: dataset.num_classes]
            histogram[-1] += counts[255]
    bar.close()
    sizes = np.array(sizes or [(0, 0)])
    return Report(n, histogram, tuple(sizes.min(0)), tuple(sizes.max(0)), problems)


def format_report(dataset, report):
    """The human-readable report (one string)."""
    left_out = (f" paired ({report.listing_problems} listing problem"
                f"{'s' if report.listing_problems > 1 else ''} below: those files are not scanned)"
                if report.listing_problems else "")
    lines = [f"{dataset.name} {dataset.split}: {report.count} images scanned of {len(dataset)}{left_out}",
             f"image sizes (HxW): {report.min_size[0]}x{report.min_size[1]} to "
             f"{report.max_size[0]}x{report.max_size[1]}"]
    if dataset.has_labels:
        total = max(int(report.histogram.sum()), 1)
        lines.append("class pixel histogram (train id, name, pixels, %):")
        names = list(dataset.class_names) + ["(ignore 255)"]
        ids = list(range(dataset.num_classes)) + [255]
        for k, (name, pixels) in enumerate(zip(names, report.histogram)):
            lines.append(f"  {ids[k]:>3}  {name:<24} {int(pixels):>14,d}  {100 * pixels / total:6.2f}")
    else:
        lines.append("no ground truth in this split")
    lines.append(f"problems: {len(report.problems)}")
    lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines)


def colour_label(label, palette):
    """uint8 [H, W] train ids -> uint8 [H, W, 3] palette colours, ignore (and unknown) white."""
    return visualize.colorize(label, palette, outside=IGNORE_WHITE)


def sample_paths(out_dir, count):
    """The sample files `write_samples` writes, sample_000.png ...; UserError if one exists already,
    or if `out_dir` (or a folder above it) is a file, not a directory."""
    require_directory_place(out_dir, "--samples_dir")
    paths = [os.path.join(out_dir, f"sample_{k:03d}.png") for k in range(count)]
    taken = [p for p in paths if os.path.lexists(p)]
    if taken:
        raise UserError(f"--samples_dir {out_dir}: {taken[0]} exists (and {len(taken) - 1} more); "
                        f"choose an empty directory or move them away")
    return paths


def write_samples(dataset, out_dir, crop, count, seed=0):
    """Writes `count` augmented training crops as `sample_KKK.png` (image | coloured label).

    Raises:
      UserError: a sample file exists already (nothing is replaced), or PNG encoding fails.
    """
    paths = sample_paths(out_dir, count)
    batches = pipeline.train_pipeline(dataset, crop, 1, seed, augment=AugmentConfig(mean=SAMPLE_MEAN),
                                      label_dtype="uint8")
    os.makedirs(out_dir, exist_ok=True)
    for path, (image, label) in zip(paths, batches.take(count)):
        image = np.clip(np.round(image.numpy()[0]), 0, 255).astype(np.uint8)
        both = np.concatenate([image, colour_label(label.numpy()[0], dataset.palette)], axis=1)
        ok, data = cv2.imencode(".png", both[..., ::-1])
        if not ok:
            raise UserError(f"{path}: OpenCV could not encode the {both.shape[1]}x{both.shape[0]} sample as PNG")
        with atomic_file(path) as f:
            f.write(data.tobytes())
    return paths


def check(config: CheckConfig, out=None):
    """Runs the check tool: prints the report (and writes samples) to `out` (default stdout).

    Returns:
      0 when the scan found no problem, 1 otherwise.
    Raises:
      UserError: a bad option, directory or output (one line naming it).
    """
    out = out or sys.stdout
    refuse_overlap([("--samples_dir", config.samples_dir)], [("--data_dir", config.data_dir)])
    if config.samples:
        sample_paths(config.samples_dir, config.samples)  # before the scan: refuse at once
    # Files that do not pair are listed as problems and the files that do are scanned, so that one
    # run names every problem of the split.
    with base.listing_problems_collected() as listing:
        try:
            dataset = registry.open_dataset(config.dataset, config.data_dir, config.split,
                                            options=config.reader_options)
        except UserError as e:
            if not listing:
                raise
            problems = listing + [str(e)]  # e.g. no file paired at all: the split is empty
            print(f"{config.dataset} {config.split}: nothing scanned, the split's file list has problems", file=out)
            print("\n".join([f"problems: {len(problems)}"] + [f"  {p}" for p in problems]), file=out)
            return 1
    report = scan(dataset, config.limit, progress=sys.stderr.isatty())
    report.problems[:0] = listing
    report.listing_problems = len(listing)
    print(format_report(dataset, report), file=out)
    if config.samples and not report.problems:
        crop, seed = config.crop or DEFAULT_CROP, config.seed or 0
        for path in write_samples(dataset, config.samples_dir, crop, config.samples, seed):
            print(f"wrote {path}", file=out)
    elif config.samples:
        print("no samples written: fix the problems first (the pipeline stops at a bad file)", file=out)
    return 1 if report.problems else 0
