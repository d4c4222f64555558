"""What evaluate.py writes and prints: prediction PNGs in the author's numbering, progress, the
per-class table, the confusion matrix drawn, paper check.

The author's eval_sub.m writes ADE20K predictions as 1..150 and VOC / Cityscapes as 0-based train ids,
named after the image with `.png` (docs/caffe_reference.md §3.6). Cityscapes' test server wants labelIds.
"""

import os

import cv2
import numpy as np

from psp_tf import visualize
from psp_tf.errors import UserError
from psp_tf.outputs import atomic_file, safe_name
from psp_tf.evaluation.protocol import MULTI_SCALES

ABSENT = "–"  # a class with no pixel in either the ground truth or the predictions (mmseg's NaN)
TOP_CONFUSED_PAIRS = 20
CHART_COMPRESSION = 3  # zlib level: half the size of OpenCV's default on these mostly-white images

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
                   visualize.colorize(labels, self.dataset.palette)[..., ::-1])
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


def format_table(summary):
    """The per-class table and the summary lines, as printed by evaluate.py and train.py.

    The headline is the author's mIoU over all K classes (eval_acc.m, docs/caffe_reference.md §3.7),
    where a class absent from both ground truth and predictions scores 0. The table marks such a
    class "–" (and a class without ground-truth pixels "–" in the accuracy column), and one more
    line gives mmseg's mIoU over the classes present, the readable figure on a subset.
    """
    names = list(summary["per_class_iou"])
    labelled = summary.get("per_class_labelled_pixels")
    predicted = summary.get("per_class_predicted_pixels")
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'acc':>6}"]
    for name in names:
        iou, acc = f"{summary['per_class_iou'][name]:6.2f}", f"{summary['per_class_accuracy'][name]:6.2f}"
        if labelled is not None and not labelled[name]:
            acc = f"{ABSENT:>6}"
            if not predicted[name]:
                iou = f"{ABSENT:>6}"
        lines.append(f"{name:<{width}}  {iou}  {acc}")
    lines.append(f"mIoU {summary['mean_iou']:.2f}  pixel accuracy {summary['pixel_accuracy']:.2f}  "
                 f"mean accuracy {summary['mean_accuracy']:.2f}  ({summary['num_images']} images)")
    if summary.get("mean_iou_present") is not None:
        absent = len(names) - summary["present_classes"]
        lines.append(f"mIoU over the {summary['present_classes']} classes present in ground truth or prediction "
                     f"(mmseg's nan-mean; {absent} absent, marked {ABSENT}): {summary['mean_iou_present']:.2f}")
    return "\n".join(lines)


def confused_pairs(confusion, class_names, top=TOP_CONFUSED_PAIRS):
    """The most confused (ground truth, prediction) pairs, the largest share of the class first.

    Args:
      confusion: int [K, K], rows = ground truth.
      class_names: K names.
      top: how many pairs at most.

    Returns:
      [(ground-truth name, predicted name, pixels, share)] over off-diagonal cells with pixels;
      share = pixels / the ground-truth class's pixels (as a row of the drawn matrix); ties by pixels.
    """
    confusion = np.asarray(confusion, np.int64)
    share = visualize.row_normalised(confusion)
    cells = [(i, j) for i, j in zip(*np.nonzero(confusion)) if i != j]
    cells.sort(key=lambda c: (-share[c], -confusion[c], c))
    return [(str(class_names[i]), str(class_names[j]), int(confusion[i, j]), float(share[i, j]))
            for i, j in cells[:top]]


def format_confused_pairs(pairs):
    """A text table of confused_pairs(...)."""
    if not pairs:
        return "no confused pixels"
    truth_width = max(len(t) for t, *_ in pairs + [("ground truth",)])
    pred_width = max(len(p) for _, p, *_ in pairs + [("", "predicted as")])
    lines = ["most confused pairs (share of the ground-truth class's pixels)",
             f"{'ground truth':<{truth_width}}  {'predicted as':<{pred_width}}  {'share':>7}  {'pixels':>12}"]
    for truth, predicted, pixels, share in pairs:
        lines.append(f"{truth:<{truth_width}}  {predicted:<{pred_width}}  {100 * share:6.2f}%  {pixels:>12,}")
    return "\n".join(lines)


def write_confusion_outputs(directory, confusion, class_names, top=TOP_CONFUSED_PAIRS):
    """Draws the confusion matrix into `directory` (e.g. evaluate.py's --output_dir staging directory).

    Writes confusion_matrix.png (row-normalised, class names on the axes) when K <= 40
    (visualize.MAX_MATRIX_CLASSES), and for any K the `top` most confused pairs as
    confused_pairs.txt and a bar chart, confused_pairs.png.

    Returns:
      The text of confused_pairs.txt, for the caller to print.

    Raises:
      UserError: a file cannot be written (naming it).
    """
    if len(class_names) <= visualize.MAX_MATRIX_CLASSES:
        visualize.write_png(os.path.join(directory, "confusion_matrix.png"),
                            visualize.confusion_image(confusion, class_names), compression=CHART_COMPRESSION)
    pairs = confused_pairs(confusion, class_names, top)
    text = format_confused_pairs(pairs)
    with atomic_file(os.path.join(directory, "confused_pairs.txt"), "w") as f:
        f.write(text + "\n")
    visualize.write_png(os.path.join(directory, "confused_pairs.png"), visualize.confused_pairs_image(pairs),
                        compression=CHART_COMPRESSION)
    return text
