"""`open_dataset(name, data_dir, split, options=...)`: one entry point for every dataset reader.

A reader is `opener(data_dir, split, options) -> Dataset`, where `options` is its typed record
(psp_tf.data.options): `parse_options(name, ("key=value", ...))` makes it from a command line, once.
"""

from psp_tf.data import ade20k, cityscapes, folder, options as options_lib, synthetic, tfrecords, voc
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


def register(name, opener, options_class=options_lib.NoOptions):
    """Adds a reader `opener(data_dir, split, options) -> Dataset` under `name`, taking `options_class`."""
    DATASETS[name] = opener
    options_lib.OPTIONS[name] = options_class


def dataset_options(name):
    """The option names `open_dataset(name, ...)` accepts."""
    return options_lib.names(name)


def parse_options(dataset_name, options):
    """The typed options record of `dataset_name` from `("key=value", ...)` (--dataset_option).

    Raises:
      UserError: one line naming the option: no '=', unknown, repeated, or a value it refuses.
    """
    return options_lib.parse(dataset_name, options)


def open_dataset(name, data_dir, split, options=None, **values):
    """Opens one split of a dataset as it lies on disk.

    Args:
      name: one of DATASETS (ade20k, cityscapes, voc2012, voc_aug, folder, synthetic, tfrecord).
      data_dir: the dataset's root directory (local or gs://); None for synthetic.
      split: split name (each reader lists its own; tfrecord: the shard prefix's base name).
      options: the reader's typed options record (`parse_options`, or e.g.
        `options.SyntheticOptions(num_images=8)`); None: from `values`.
      **values: the record's fields, for code (`open_dataset("synthetic", None, "val", num_images=3)`):
        checked as the record checks them.
    Returns:
      a `psp_tf.data.base.Dataset`.
    Raises:
      UserError: unknown name or option, a bad option value, missing directory/list, empty split,
        unpaired files.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    if options is None:
        options = options_lib.build(name, **values)
    elif values:
        raise UserError(f"dataset {name}: give options as one record or as values, not both")
    elif not isinstance(options, options_lib.options_class(name)):
        raise UserError(f"dataset {name}: options must be a {options_lib.options_class(name).__name__}, "
                        f"not {type(options).__name__}")
    if data_dir is None and name != "synthetic":
        raise UserError(f"dataset {name}: a data directory is required")
    return DATASETS[name](data_dir, split, options)
