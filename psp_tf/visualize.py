"""Colour masks and overlays with a legend (palettes: the author's visualizationCode, docs/caffe_reference.md §3.8)."""

import cv2
import numpy as np

IGNORE_COLOUR = (0, 0, 0)


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
    mask = colorize(labels, palette)
    blended = (image.astype(np.float32) * (1 - alpha) + mask.astype(np.float32) * alpha)
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if not legend:
        return blended
    ids, counts = np.unique(np.asarray(labels), return_counts=True)
    present = [int(i) for i, _ in sorted(zip(ids, counts), key=lambda t: -t[1]) if 0 <= i < len(palette)]
    return np.concatenate([blended, legend_panel(present, palette, class_names, image.shape[0])], axis=1)


def legend_panel(ids, palette, class_names, height, row=18):
    """A white panel listing `ids` as colour swatch + name, as many rows as fit in `height`."""
    names = [str(class_names[i]) for i in ids]
    width = 30 + 8 * max([len(n) for n in names] + [6])
    panel = np.full((height, width, 3), 255, np.uint8)
    fit = max(1, height // row)
    for k, (i, name) in enumerate(zip(ids, names)):
        if k == fit - 1 and len(ids) > fit:
            cv2.putText(panel, f"+{len(ids) - k} more", (4, k * row + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
            break
        y = k * row
        cv2.rectangle(panel, (4, y + 3), (18, y + row - 3), tuple(int(c) for c in palette[i]), -1)
        cv2.putText(panel, name, (24, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return panel
