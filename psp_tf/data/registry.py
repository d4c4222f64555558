"""`open_dataset(name, data_dir, split, **options)`: one entry point for every dataset reader."""

import inspect
import json

from psp_tf.data import ade20k, cityscapes, folder, synthetic, tfrecords, voc
from psp_tf.errors import UserError

DATASETS = {
    "ade20k": ade20k.open_ade20k,
    "cityscapes": cityscapes.open_cityscapes,
    "voc2012": voc.open_voc2012,
    "voc_aug": voc.open_voc_aug,
    "folder": folder.open_folder,
    "synthetic": synthetic.open_synthetic,
    "tfrecord": tfrecords.open_tfrecord,
}


def register(name, opener):
    """Adds a reader `opener(data_dir, split, **options) -> Dataset` under `name`."""
    DATASETS[name] = opener


def dataset_options(name):
    """The option names `open_dataset(name, ...)` accepts."""
    params = list(inspect.signature(DATASETS[name]).parameters)
    return tuple(p for p in params if p not in ("data_dir", "split"))


def open_dataset(name, data_dir, split, **options):
    """Opens one split of a dataset as it lies on disk.

    Args:
      name: one of DATASETS (ade20k, cityscapes, voc2012, voc_aug, folder, synthetic, tfrecord).
      data_dir: the dataset's root directory (local or gs://); None for synthetic.
      split: split name (each reader lists its own).
      **options: reader options (cityscapes: coarse; voc_aug: voc_dir, sbd_dir; folder:
        num_classes, class_names, palette; synthetic: num_images, seed; tfrecord: none, split = the
        shard prefix's base name).
    Returns:
      a `psp_tf.data.base.Dataset`.
    Raises:
      UserError: unknown name or option, missing directory/list, empty split, unpaired files.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    valid = dataset_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"dataset {name}: unknown option(s) {', '.join(unknown)}; valid options: "
                        f"{', '.join(valid) or 'none'}")
    if data_dir is None and name != "synthetic":
        raise UserError(f"dataset {name}: a data directory is required")
    try:
        return DATASETS[name](data_dir, split, **options)
    except UserError:
        raise
    except (TypeError, ValueError) as e:  # an option value of the wrong kind, e.g. num_images=abc
        raise UserError(f"dataset {name}: bad option value in {options} ({e})") from None


def parse_options(pairs):
    """Parses CLI `key=value` dataset options; values are JSON where they parse (3, true, [..]), else text.

    Raises:
      UserError: an item without '='.
    """
    options = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise UserError(f"--dataset_option {pair!r} must be key=value")
        key, value = pair.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options
