"""Colour masks, overlays with a legend, evaluation panels and confusion plots, drawn with OpenCV.

Palettes: the author's visualizationCode (docs/caffe_reference.md §3.8). Everything here is drawn with
OpenCV, already a dependency, so that pictures need no plotting library (matplotlib is not one of
psp_tf's requirements, and a headless evaluation host rarely has it).
"""

import cv2
import numpy as np

from psp_tf.classes import IGNORE_LABEL
from psp_tf.errors import UserError
from psp_tf.outputs import atomic_file

IGNORE_COLOUR = (0, 0, 0)
# Ignored ground-truth pixels are hatched, not filled: any solid colour can be some palette's class
# colour (VOC's background is black, like colorize's ignore), a stripe pattern is none of them.
HATCH_COLOURS = ((255, 255, 255), (255, 0, 255))
HATCH_PERIOD = 8
IGNORE_NAME = f"ignore ({IGNORE_LABEL})"
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SCALE = 0.4
TITLE_HEIGHT = 18
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


def colorize(labels, palette, outside=IGNORE_COLOUR):
    """Colour mask of a train-id map.

    Args:
      labels: int [H, W] train ids (values outside the palette, e.g. 255, are drawn `outside`).
      palette: K RGB triples, index = train id.
      outside: the RGB colour of values outside the palette (default black).

    Returns:
      uint8 [H, W, 3] RGB.
    """
    table = np.zeros((256, 3), np.uint8)
    table[:] = outside
    table[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    labels = np.asarray(labels)
    return table[np.where((labels >= 0) & (labels < 256), labels, 255).astype(np.intp)]


def hatch(height, width):
    """uint8 [height, width, 3] diagonal stripes of HATCH_COLOURS (the mark of ignored pixels)."""
    y, x = np.mgrid[:height, :width]
    stripe = ((x + y) // (HATCH_PERIOD // 2)) % 2
    return np.asarray(HATCH_COLOURS, np.uint8)[stripe]


def colorize_ground_truth(labels, palette):
    """Like colorize, but pixels outside the palette (255 = ignore) are hatched."""
    labels = np.asarray(labels)
    mask = colorize(labels, palette)
    outside = (labels < 0) | (labels >= len(palette))
    mask[outside] = hatch(*labels.shape)[outside]
    return mask


def blend(image, mask, alpha=0.5):
    """uint8 image·(1 − alpha) + mask·alpha, rounded."""
    blended = image.astype(np.float32) * (1 - alpha) + mask.astype(np.float32) * alpha
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def classes_by_area(*label_maps, num_classes):
    """Train ids 0..K-1 present in any of the maps, largest total area first (ties: lower id first)."""
    counts = sum(np.bincount(np.asarray(m).ravel().clip(0, num_classes).astype(np.intp),
                             minlength=num_classes + 1)[:num_classes] for m in label_maps)
    return [int(i) for i in sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))]


def overlay(image, labels, palette, class_names, alpha=0.5, legend=True):
    """The image blended with its colour mask, plus a legend of the classes present (largest first).

    Args:
      image: uint8 [H, W, 3] RGB.
      labels: int [H, W] train ids.
      palette, class_names: K colours and names.
      alpha: weight of the mask.
      legend: append a legend panel on the right.

    Returns:
      uint8 [H, W + legend width, 3] RGB.
    """
    blended = blend(image, colorize(labels, palette), alpha)
    if not legend:
        return blended
    present = classes_by_area(labels, num_classes=len(palette))
    return np.concatenate([blended, legend_panel(present, palette, class_names, image.shape[0])], axis=1)


def legend_panel(ids, palette, class_names, height, row=18, ignore=False):
    """A white panel listing `ids` as colour swatch + name, as many rows as fit in `height`.

    Args:
      ignore: add a last entry with the hatch that marks ignored pixels.
    """
    entries = [(str(class_names[i]), tuple(int(c) for c in palette[i])) for i in ids]
    if ignore:
        entries.append((IGNORE_NAME, None))
    width = 30 + 8 * max([len(name) for name, _ in entries] + [6])
    panel = np.full((height, width, 3), 255, np.uint8)
    fit = max(1, height // row)
    for k, (name, colour) in enumerate(entries):
        if k == fit - 1 and len(entries) > fit:
            _text(panel, f"+{len(entries) - k} more", (4, k * row + 13))
            break
        y = k * row
        if colour is None:
            panel[y + 3:y + row - 2, 4:19] = hatch(row - 5, 15)
        else:
            cv2.rectangle(panel, (4, y + 3), (18, y + row - 3), colour, -1)
        _text(panel, name, (24, y + 13))
    return panel


def _text(canvas, text, origin, colour=BLACK, scale=TEXT_SCALE):
    cv2.putText(canvas, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def _text_width(text, scale=TEXT_SCALE):
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def _titled(cell, title):
    """`cell` under a white strip holding `title`."""
    strip = np.full((TITLE_HEIGHT, cell.shape[1], 3), 255, np.uint8)
    _text(strip, title, (4, TITLE_HEIGHT - 5))
    return np.concatenate([strip, cell], axis=0)


def _blank(height, width, text):
    cell = np.full((height, width, 3), 200, np.uint8)
    _text(cell, text, (4, min(height - 4, 20)))
    return cell


def show_panel(image, label, prediction, palette, class_names, alpha=0.5):
    """What evaluate.py --show_dir writes for one image: a 2×2 grid and a legend.

    Top row: the image and the ground truth (ignored pixels hatched); bottom row: the prediction and
    the prediction blended over the image. The legend lists the classes in the ground truth or the
    prediction, largest total area first, and the hatch when some pixels are ignored.

    Args:
      image: uint8 [H, W, 3] RGB.
      label: int [H, W] train ids (255 = ignore), or None for a split without ground truth.
      prediction: int [H, W] train ids 0..K-1.
      palette, class_names: K colours and names.
      alpha: weight of the mask in the overlay.

    Returns:
      uint8 [2·(H + 18), 2·W + legend width, 3] RGB (18: each cell's title strip).
    """
    image = np.asarray(image, np.uint8)
    prediction = np.asarray(prediction)
    height, width = image.shape[:2]
    if label is None:
        truth, maps, ignored = _blank(height, width, "no ground truth"), [prediction], False
    else:
        label = np.asarray(label)
        truth, maps = colorize_ground_truth(label, palette), [label, prediction]
        ignored = bool(np.any((label < 0) | (label >= len(palette))))
    top = np.concatenate([_titled(image, "image"), _titled(truth, "ground truth")], axis=1)
    bottom = np.concatenate([_titled(colorize(prediction, palette), "prediction"),
                             _titled(blend(image, colorize(prediction, palette), alpha), "overlay")], axis=1)
    grid = np.concatenate([top, bottom], axis=0)
    present = classes_by_area(*maps, num_classes=len(palette))
    legend = legend_panel(present, palette, class_names, grid.shape[0], ignore=ignored)
    return np.concatenate([grid, legend], axis=1)


def write_png(path, rgb, recover=True, compression=None):
    """Writes an RGB (or grey) uint8 array as a PNG through atomic_file.

    Args:
      recover: see psp_tf.outputs.atomic_file.
      compression: zlib level 0..9, or None for OpenCV's default (3.5x faster than level 3 on a
        large noisy panel, same size; on mostly-white charts level 3 is half its size).

    Raises:
      UserError: OpenCV cannot encode it, or the file cannot be written (both name `path`).
    """
    rgb = np.asarray(rgb, np.uint8)
    options = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression]
    ok, data = cv2.imencode(".png", rgb[..., ::-1] if rgb.ndim == 3 else rgb, options)
    if not ok:
        raise UserError(f"cannot encode {path} as PNG")
    with atomic_file(path, recover=recover) as f:
        f.write(data.tobytes())


def write_show_image(path, image, label, prediction, palette, class_names, recover=True):
    """Writes show_panel(...) to `path` (a .png) atomically; see show_panel for the arguments."""
    write_png(path, show_panel(image, label, prediction, palette, class_names), recover=recover)


# The confusion matrix is drawn for up to this many classes (ADE20K's 150 would give unreadable
# 5-pixel cells); beyond it, the most confused class pairs are drawn as bars.
MAX_MATRIX_CLASSES = 40
# Sequential white -> dark blue map (the end points of ColorBrewer's "Blues").
LOW_COLOUR = np.array((247, 251, 255), np.float64)
HIGH_COLOUR = np.array((8, 48, 107), np.float64)


def _shade(fraction):
    """uint8 [..., 3] colours of fractions 0..1 on the LOW -> HIGH map."""
    fraction = np.clip(np.asarray(fraction, np.float64), 0, 1)[..., None]
    return np.round(LOW_COLOUR + fraction * (HIGH_COLOUR - LOW_COLOUR)).astype(np.uint8)


def row_normalised(confusion):
    """float64 [K, K]: each row divided by its sum; rows without pixels are NaN."""
    confusion = np.asarray(confusion, np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / totals, np.nan)


def _label_column(names, cell, width, align_right):
    """White [len(names)·cell, width, 3] with one name per cell-high row."""
    column = np.full((len(names) * cell, width, 3), 255, np.uint8)
    for i, name in enumerate(names):
        x = width - 4 - _text_width(name) if align_right else 4
        _text(column, name, (x, i * cell + (cell + 9) // 2))
    return column


def confusion_image(confusion, class_names):
    """The row-normalised confusion matrix with class names on both axes.

    Rows are ground truth, columns prediction; cell (i, j) is the share of class i's pixels predicted
    as j (printed in percent when the cells are large enough). Rows of classes without pixels are
    hatched.

    Args:
      confusion: int [K, K], rows = ground truth (K <= MAX_MATRIX_CLASSES).
      class_names: K names.

    Returns:
      uint8 [H, W, 3] RGB.
    """
    norm = row_normalised(confusion)
    k = norm.shape[0]
    names = [str(n) for n in class_names]
    cell = int(np.clip(640 // max(k, 1), 16, 48))
    matrix = np.repeat(np.repeat(_shade(np.nan_to_num(norm)), cell, axis=0), cell, axis=1)
    for i in np.flatnonzero(np.isnan(norm[:, 0])):
        matrix[i * cell:(i + 1) * cell] = hatch(cell, k * cell)
    if cell >= 28:
        for (i, j), value in np.ndenumerate(norm):
            if not np.isnan(value):
                text = f"{100 * value:.0f}" if value >= 0.1 or value == 0 else f"{100 * value:.1f}"
                _text(matrix, text, (j * cell + (cell - _text_width(text)) // 2, i * cell + (cell + 9) // 2),
                      WHITE if value > 0.5 else BLACK)
    label_width = max(_text_width(n) for n in names) + 8
    left = TITLE_HEIGHT + label_width
    rows = _label_column(names, cell, label_width, align_right=True)
    columns = cv2.rotate(_label_column(names, cell, label_width, align_right=False),
                         cv2.ROTATE_90_COUNTERCLOCKWISE)
    axis_left = cv2.rotate(_caption(k * cell, "ground truth"), cv2.ROTATE_90_COUNTERCLOCKWISE)
    body = np.concatenate([axis_left, rows, matrix], axis=1)
    title = "confusion matrix: % of each ground-truth class's pixels (rows)"
    return _stack([_caption(_text_width(title) + 8, title, 4), _pad_left(_caption(k * cell, "prediction"), left),
                   _pad_left(columns, left), body, _colour_bar(body.shape[1], left, k * cell)])


def _stack(blocks):
    """Blocks one under the other, each padded with white on the right to the widest."""
    width = max(b.shape[1] for b in blocks)
    return np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
                           for b in blocks], axis=0)


def _caption(width, text, x=None):
    """A white strip TITLE_HEIGHT high holding `text`, centred unless `x` is given."""
    strip = np.full((TITLE_HEIGHT, width, 3), 255, np.uint8)
    _text(strip, text, ((width - _text_width(text)) // 2 if x is None else x, TITLE_HEIGHT - 5))
    return strip


def _pad_left(block, width):
    return np.concatenate([np.full((block.shape[0], width, 3), 255, np.uint8), block], axis=1)


def _colour_bar(width, left, length):
    """A strip under the matrix: the colour map from 0% to 100%."""
    strip = np.full((30, width, 3), 255, np.uint8)
    strip[6:16, left:left + length] = _shade(np.linspace(0, 1, length))[None]
    _text(strip, "0%", (left, 28))
    _text(strip, "100%", (left + length - _text_width("100%"), 28))
    return strip


def confused_pairs_image(pairs, row=20, bar_width=320):
    """A bar chart of the most confused (ground truth, prediction) pairs.

    Args:
      pairs: [(ground-truth name, predicted name, pixels, share)], share = the fraction of the
        ground-truth class's pixels predicted as the other class; drawn in this order.

    Returns:
      uint8 [H, W, 3] RGB; bars are scaled to the largest share.
    """
    labels = [f"{truth} -> {predicted}" for truth, predicted, _, _ in pairs]
    values = [f"{100 * share:.1f}% ({pixels:,} px)" for _, _, pixels, share in pairs]
    label_width = max([_text_width(t) for t in labels] + [60]) + 8
    value_width = max([_text_width(t) for t in values] + [60]) + 8
    chart = np.full((max(len(pairs), 1) * row, label_width + bar_width + value_width, 3), 255, np.uint8)
    if not pairs:
        _text(chart, "no confused pixels", (4, row - 6))
    largest = max([share for *_, share in pairs] + [1e-12])
    for i, (label, value, (*_, share)) in enumerate(zip(labels, values, pairs)):
        y = i * row
        _text(chart, label, (label_width - 4 - _text_width(label), y + row - 6))
        length = int(round(bar_width * share / largest))
        chart[y + 3:y + row - 3, label_width:label_width + length] = HIGH_COLOUR.astype(np.uint8)
        _text(chart, value, (label_width + length + 4, y + row - 6))
    return _titled(chart, "most confused pairs (ground truth -> prediction): % of the ground-truth "
                          "class's pixels")
