"""ADE20K SceneParsing (ADEChallengeData2016) as downloaded: 150 classes, annotation 0 = "other".

Train id = annotation value - 1 and 0 -> 255 (docs/datasets.md, ADE20K): network channel k is
ADE class k + 1, which is how the author's ADE20K model was trained.
"""

import os

import numpy as np
import tensorflow as tf

from psp_tf import classes
from psp_tf.data import base, decode

SPLITS = {"training": "training", "validation": "validation", "train": "training", "val": "validation"}


def label_lut():
    """Raw ADE annotation value -> train id: 0 -> 255, v -> v - 1 for 1..150, others invalid."""
    lut = np.full(256, decode.INVALID, np.int32)
    lut[0] = decode.IGNORE_LABEL
    lut[1:151] = np.arange(150)
    return lut


def find_root(data_dir):
    """Accepts ADEChallengeData2016 itself or the directory that contains it."""
    inner = os.path.join(data_dir, "ADEChallengeData2016")
    return inner if tf.io.gfile.isdir(inner) else data_dir


def open_ade20k(data_dir, split, options=None):
    """Opens ADEChallengeData2016 `split` (training/validation, also train/val); no options.

    Raises:
      UserError: unknown split, missing images/ or annotations/ directory, unpaired files.
    """
    if split not in SPLITS:
        raise base.UserError(f"ade20k has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = find_root(data_dir)
    image_dir = base.require_dir(os.path.join(root, "images", SPLITS[split]), "ade20k images")
    label_dir = base.require_dir(os.path.join(root, "annotations", SPLITS[split]), "ade20k annotations")
    examples = base.pair_by_stem(image_dir, label_dir)
    return base.Dataset("ade20k", SPLITS[split], examples, 150, classes.ADE20K_CLASSES,
                        classes.ADE20K_PALETTE, luts=[label_lut()], where=image_dir)
