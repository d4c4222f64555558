"""A user's own data: images/ and labels/ with matching stems, labels already train ids (255 = ignore).

Layouts: `images/<split>/` + `labels/<split>/`, or flat `images/` + `labels/` filtered by a
`<split>.txt` list of stems. A split without a labels directory has no ground truth.
"""

import os

import tensorflow as tf

from psp_tf import classes
from psp_tf.data import base, decode


def _names(class_names, num_classes):
    """Class names from the option: a tuple, a comma-separated string, or a file with one name a line."""
    if class_names is None:
        return tuple(f"class_{i}" for i in range(num_classes))
    if isinstance(class_names, str):
        if tf.io.gfile.exists(class_names):
            class_names = [n.strip() for n in base.read_bytes(class_names).decode().splitlines() if n.strip()]
        else:
            class_names = [n.strip() for n in class_names.split(",")]
    if len(class_names) != num_classes:
        raise base.UserError(f"--dataset_option class_names: {len(class_names)} names given for "
                             f"num_classes={num_classes}")
    return tuple(class_names)


def open_folder(data_dir, split, options):
    """Opens a folder dataset.

    Args:
      data_dir: directory with images/ and labels/.
      split: subdirectory name, or the name of a `<split>.txt` stem list in data_dir.
      options: FolderOptions: num_classes K (label values must be in [0, K) or 255), class_names,
        palette (default: the VOC palette).
    """
    num_classes = int(options.num_classes)
    palette = options.palette or tuple(classes.voc_palette_color(i) for i in range(num_classes))
    images = base.require_dir(os.path.join(data_dir, "images"), "folder images")
    labels = os.path.join(data_dir, "labels")
    if tf.io.gfile.isdir(os.path.join(images, split)):
        label_dir = os.path.join(labels, split)
        examples = base.pair_by_stem(os.path.join(images, split),
                                     label_dir if tf.io.gfile.isdir(label_dir) else None)
    else:
        examples = _from_list(data_dir, images, labels, split)
    return base.Dataset("folder", split, examples, num_classes, _names(options.class_names, num_classes),
                        palette, luts=[decode.identity_lut(num_classes)], where=os.path.join(images, split))


def _from_list(data_dir, images, labels, split):
    list_path = os.path.join(data_dir, split + ".txt")
    if not tf.io.gfile.exists(list_path):
        raise base.UserError(f"{os.path.join(images, split)}: folder split directory not found "
                             f"(nor a split list {list_path})")
    wanted = [line.strip() for line in base.read_bytes(list_path).decode().splitlines() if line.strip()]
    pairs = {base.stem(i): (i, l) for i, l in base.pair_by_stem(
        images, labels if tf.io.gfile.isdir(labels) else None)}
    base.raise_problems([f"{list_path}: {name} has no image in {images}" for name in wanted if name not in pairs])
    return [pairs[name] for name in wanted if name in pairs]
