"""Cityscapes (leftImg8bit + gtFine, optionally gtCoarse) as downloaded: 19 training classes.

Reads `*_labelTrainIds.png` where cityscapesscripts created them, otherwise maps the downloaded
`*_labelIds.png` with the official table (cityscapesscripts helpers/labels.py; docs/datasets.md).
"""

import os

import numpy as np

from psp_tf import classes
from psp_tf.data import base, decode
from psp_tf.data.options import CityscapesOptions

# labelId -> trainId for the 19 evaluated classes; every other labelId is ignored (255).
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SPLITS = {False: ("train", "val", "test"), True: ("train", "train_extra", "val")}
# The test split's gtFine files are placeholders: its ground truth is on the evaluation server.
UNLABELLED_SPLITS = ("test",)


def label_id_lut():
    """labelId (0..33) -> trainId; ids 0..33 outside the table -> 255; other values invalid."""
    lut = np.full(256, decode.INVALID, np.int32)
    lut[:34] = decode.IGNORE_LABEL
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def open_cityscapes(data_dir, split, options=CityscapesOptions()):
    """Opens a Cityscapes split: train/val/test (fine) or train/train_extra/val with option coarse.

    Raises:
      UserError: unknown split, missing directory, unpaired files.
    """
    coarse = options.coarse
    gt = "gtCoarse" if coarse else "gtFine"
    if split not in SPLITS[bool(coarse)]:
        raise base.UserError(f"cityscapes ({gt}) has no split {split!r}; valid splits: "
                             f"{', '.join(SPLITS[bool(coarse)])}")
    image_dir = base.require_dir(os.path.join(data_dir, "leftImg8bit", split), "cityscapes leftImg8bit")
    if split in UNLABELLED_SPLITS:
        examples = base.pair_by_stem(image_dir, None, image_suffix="_leftImg8bit.png", recursive=True)
        return _dataset(split, examples, None, image_dir)
    label_dir = base.require_dir(os.path.join(data_dir, gt, split), f"cityscapes {gt}")
    examples = _pair(image_dir, label_dir, gt)
    return _dataset(split, examples, label_dir, image_dir)


def _pair(image_dir, label_dir, gt):
    """Pairs images with labelTrainIds files where they exist, else labelIds; returns (path, path, lut).

    Raises:
      DataProblems: every unpaired file.
    """
    problems = []
    images = base.list_files(image_dir, "_leftImg8bit.png", True, problems)
    train_ids = base.list_files(label_dir, f"_{gt}_labelTrainIds.png", True, problems)
    label_ids = base.list_files(label_dir, f"_{gt}_labelIds.png", True, problems)
    problems += [f"{train_ids.get(key) or label_ids[key]}: label has no image in {image_dir}"
                 for key in sorted((set(train_ids) | set(label_ids)) - set(images))]
    examples = []
    for key in sorted(images):
        if key in train_ids:
            examples.append((images[key], train_ids[key], 0))
        elif key in label_ids:
            examples.append((images[key], label_ids[key], 1))
        else:
            problems.append(f"{images[key]}: image has no label (expected {key}_{gt}_labelIds.png "
                            f"in {label_dir})")
    base.raise_problems(problems)
    return examples


def _dataset(split, examples, label_dir, where):
    luts = [decode.identity_lut(19), label_id_lut()]
    lut_ids = [e[2] if len(e) > 2 else 0 for e in examples]
    return base.Dataset("cityscapes", split, [e[:2] for e in examples], 19, classes.CITYSCAPES_CLASSES,
                        classes.CITYSCAPES_PALETTE, luts=luts, lut_ids=lut_ids, where=where)
