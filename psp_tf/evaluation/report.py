"""What evaluate.py writes and prints: prediction PNGs in the author's numbering, progress, paper check.

The author's eval_sub.m writes ADE20K predictions as 1..150 and VOC / Cityscapes as 0-based train ids,
named after the image with `.png` (docs/caffe_reference.md §3.6). Cityscapes' test server wants labelIds.
"""

import os
import sys
import time

import cv2
import numpy as np

from psp_tf.errors import UserError
from psp_tf.outputs import safe_name
from psp_tf.evaluation.protocol import MULTI_SCALES
from psp_tf.visualize import colorize

# cityscapesScripts helpers/labels.py: trainId 0..18 -> labelId (docs/datasets.md).
CITYSCAPES_TRAIN_TO_LABEL_ID = np.array(
    [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], np.uint8)


def author_numbering(labels, dataset_name):
    """Train ids -> the values the author's code writes: ADE20K 1..150, others unchanged."""
    labels = np.asarray(labels)
    return (labels + 1 if dataset_name == "ade20k" else labels).astype(np.uint8)


class PredictionWriter:
    """Writes `<name>.png` to predictions/ (author numbering), color/ (palette) and, optionally,
    submission/ (Cityscapes labelIds) under `root` (a staging directory of atomic_directory).

    Raises:
      UserError: an image name that is no plain file name (a TFRecord `.json` may hold any string)
        or two images of the same name, before anything is written.
    """

    def __init__(self, root, dataset, submission=False):
        self.root, self.dataset, self.submission = root, dataset, submission
        where = getattr(dataset, "metadata_path", None) or f"{dataset.name} dataset"
        self.names = [safe_name(n, f"{where}: image {i} name") for i, n in enumerate(dataset.names)]
        seen = set()
        for name in self.names:
            if name in seen:
                raise UserError(f"{where}: several images are named {name!r} (predictions are written "
                                f"as <name>.png)")
            seen.add(name)
        folders = ["predictions", "color"] + (["submission"] if submission else [])
        for folder in folders:
            os.makedirs(os.path.join(root, folder), exist_ok=True)

    def __call__(self, index, labels):
        name = self.names[index] + ".png"
        write_png(os.path.join(self.root, "predictions", name),
                   author_numbering(labels, self.dataset.name))
        write_png(os.path.join(self.root, "color", name),
                   colorize(labels, self.dataset.palette)[..., ::-1])
        if self.submission:
            write_png(os.path.join(self.root, "submission", name), CITYSCAPES_TRAIN_TO_LABEL_ID[labels])


def encode_png(array, path):
    """PNG bytes of a uint8 [H, W] or BGR [H, W, 3] array; UserError naming `path` when cv2 refuses."""
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise UserError(f"cannot encode {path} as PNG")
    return data.tobytes()


def write_png(path, array):
    """Writes a PNG into a staging directory (the directory is what is atomic); UserError naming the file."""
    data = encode_png(array, path)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


class Progress:
    """A one-line progress bar with ETA on stderr."""

    def __init__(self, stream=sys.stderr, width=30):
        self.stream, self.width, self.start = stream, width, time.time()

    def __call__(self, done, total):
        elapsed = time.time() - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        filled = int(self.width * done / max(total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
                          f"{elapsed / max(done, 1):.1f}s/img  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def paper_figure(config, dataset_name, split, scales):
    """The published (mIoU, pixel accuracy) this run can be compared with.

    Raises:
      UserError: no published figure for this preset, dataset, split or scale set.
    """
    paper = config.paper
    if paper is None or dataset_name != config.dataset:
        raise UserError(f"--expect paper: preset {config.name} has no published result on {dataset_name}")
    if split != paper.split:
        raise UserError(f"--expect paper: {config.name} was published on split {paper.split!r}, not {split!r}")
    if tuple(scales) == (1.0,):
        figure = (paper.single_scale_miou, paper.single_scale_pixel_acc)
    elif tuple(scales) == MULTI_SCALES:
        figure = (paper.multi_scale_miou, paper.multi_scale_pixel_acc)
    else:
        raise UserError("--expect paper needs --scales 1.0 or ms (the published settings)")
    if figure[0] is None:
        raise UserError(f"--expect paper: no published {'single' if len(scales) == 1 else 'multi'}-scale "
                        f"figure for {config.name}")
    return figure


def compare_with_paper(summary, figure, tolerance):
    """(message, ok): ok is False when mIoU is more than `tolerance` points below the paper."""
    miou, pixel_acc = figure
    delta = summary["mean_iou"] - miou
    text = f"paper mIoU {miou:.2f}, ours {summary['mean_iou']:.2f} ({delta:+.2f})"
    if pixel_acc is not None:
        text += f"; pixel accuracy paper {pixel_acc:.2f}, ours {summary['pixel_accuracy']:.2f} " \
                f"({summary['pixel_accuracy'] - pixel_acc:+.2f})"
    ok = delta >= -tolerance
    return text + ("" if ok else f"; mIoU is more than {tolerance} points below the paper"), ok
