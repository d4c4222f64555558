"""`python -m psp_tf.data.check`: scans a dataset split and reports what the network will be fed.

Reports the image count, image sizes, the class pixel histogram and every bad example found (each
one line naming the file), and optionally writes augmented training samples as PNGs (image beside
its label coloured with the dataset palette, ignore = white). Exit status 1 when problems are found.

Example:
  python -m psp_tf.data.check --dataset voc2012 --data_dir /data/VOCdevkit --split train \
      --samples 8 --samples_dir /tmp/voc_samples --crop 473
"""

import argparse
import dataclasses
import os
import sys
from typing import List

from psp_tf.startup import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

import numpy as np

import tensorflow as tf

from psp_tf import checks
from psp_tf.data import augment, base, pipeline, registry, tfrecords
from psp_tf.errors import ArgumentParser, UserError, exit_on_user_error
from psp_tf.outputs import atomic_file, refuse_overlap

DEFAULT_CROP = 473
# The augmentation blurs with a 5x5 kernel on a reflect-padded crop, and TensorFlow's reflect padding
# needs more pixels than it pads.
MIN_CROP = augment.BLUR_SIZE // 2 + 1
CROP = checks.Range(True, MIN_CROP, checks.INT32_MAX, text=f"an integer >= {MIN_CROP} (the augmentation's blur)")


@dataclasses.dataclass
class Report:
    """What a scan found. histogram: pixels per train id 0..K-1, then the ignored (255) pixels."""

    count: int
    histogram: np.ndarray
    min_size: tuple
    max_size: tuple
    problems: List[str]


def scan(dataset, limit=None, progress=False):
    """Reads every example (or the first `limit`), collecting problems instead of stopping."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    histogram = np.zeros(dataset.num_classes + 1, np.int64)
    sizes, problems = [], []
    for i, example in enumerate(_examples(dataset, n)):
        if isinstance(example, UserError):
            problems.append(str(example))
            continue
        image, label = example
        sizes.append(image.shape[:2])
        if label is not None:
            counts = np.bincount(label.ravel(), minlength=256)
            histogram[:-1] += counts[: dataset.num_classes]
            histogram[-1] += counts[255]
        if progress:
            sys.stderr.write(f"\rscanned {i + 1}/{n}")
    if progress and n:
        sys.stderr.write("\n")
    sizes = np.array(sizes or [(0, 0)])
    return Report(n, histogram, tuple(sizes.min(0)), tuple(sizes.max(0)), problems)


def _examples(dataset, n):
    """Yields (image, label) or the UserError of each of the first n examples."""
    if isinstance(dataset, tfrecords.TFRecordDataset):
        yield from _record_examples(dataset, n)
        return
    for i in range(n):
        try:
            yield dataset.read(i)
        except UserError as e:
            yield e


def _record_examples(dataset, n):
    """(image, label) or UserError of the first n records of a TFRecord set.

    Records have no random access: they are read in order, shard by shard, so that a truncated or
    corrupt shard is named (raised: the rest of the set cannot be read); a record that does not
    decode is a problem of its example.
    """
    done = 0
    for shard in range(len(dataset.files)):
        for record in dataset.shard_records(shard):
            if done == n:
                return
            done += 1
            try:
                image, label, _ = tfrecords.parse_record(record, dataset.has_labels)
            except tf.errors.OpError as e:
                yield UserError(f"{dataset.files[shard]}: the record of {dataset.names[done - 1]} does not "
                                f"decode ({tfrecords.op_error_reason(e)})")
                continue
            yield image.numpy(), (label.numpy() if dataset.has_labels else None)


def format_report(dataset, report):
    """The human-readable report (one string)."""
    lines = [f"{dataset.name} {dataset.split}: {report.count} images scanned of {len(dataset)}",
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
    table = np.full((256, 3), 255, np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    return table[label]


def write_samples(dataset, out_dir, crop, count, seed=0):
    """Writes `count` augmented training crops as `sample_KKK.png` (image | coloured label)."""
    import cv2  # only needed here

    batches = pipeline.train_pipeline(dataset, crop, 1, seed, label_dtype="uint8")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k, (image, label) in enumerate(batches.take(count)):
        image = np.clip(np.round(image.numpy()[0]), 0, 255).astype(np.uint8)
        both = np.concatenate([image, colour_label(label.numpy()[0], dataset.palette)], axis=1)
        ok, data = cv2.imencode(".png", both[..., ::-1])
        path = os.path.join(out_dir, f"sample_{k:03d}.png")
        with atomic_file(path) as f:
            f.write(data.tobytes())
        paths.append(path)
    return paths


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m psp_tf.data.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(sorted(registry.DATASETS))}")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--split", required=True)
    parser.add_argument("--dataset_option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option, repeatable (e.g. num_classes=5)")
    parser.add_argument("--limit", type=checks.arg_type(checks.POSITIVE_INT), default=None,
                        help="scan only the first N images")
    parser.add_argument("--samples", type=checks.arg_type(checks.NON_NEGATIVE_INT), default=0,
                        help="augmented samples to write")
    parser.add_argument("--samples_dir", default=None, type=checks.output_path, help="where the sample PNGs go")
    parser.add_argument("--crop", type=checks.arg_type(CROP), default=None,
                        help=f"sample crop size (default {DEFAULT_CROP})")
    parser.add_argument("--seed", type=checks.arg_type(checks.SEED), default=None, help="sample seed (default 0)")
    args = parser.parse_args(argv)
    checks.require(parser, args, "samples", "--samples_dir", lambda a: a.samples_dir is not None)
    for name in ("samples_dir", "crop", "seed"):
        checks.require(parser, args, name, "--samples N", lambda a: a.samples > 0)
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    refuse_overlap([("--samples_dir", args.samples_dir)], [("--data_dir", args.data_dir)])
    try:
        dataset = registry.open_dataset(args.dataset, args.data_dir, args.split,
                                        **registry.parse_options(args.dataset_option))
    except base.DataProblems as e:  # the file list itself is wrong: list every problem, scan nothing
        print(f"{args.dataset} {args.split}: nothing scanned, the split's file list has problems")
        print("\n".join([f"problems: {len(e.problems)}"] + [f"  {p}" for p in e.problems]))
        return 1
    report = scan(dataset, args.limit, progress=sys.stderr.isatty())
    print(format_report(dataset, report))
    if args.samples and not report.problems:
        crop, seed = args.crop or DEFAULT_CROP, args.seed or 0
        for path in write_samples(dataset, args.samples_dir, crop, args.samples, seed):
            print(f"wrote {path}")
    elif args.samples:
        print("no samples written: fix the problems first (the pipeline stops at a bad file)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
