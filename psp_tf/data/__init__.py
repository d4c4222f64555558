"""Datasets as users have them on disk, and the tf.data pipelines that feed training and evaluation.

`open_dataset(name, data_dir, split, **options)` -> Dataset (len, examples, num_classes, class_names,
palette, ignore_label, read(i)); `train_pipeline(...)` -> augmented, deterministic, resumable batches;
`eval_source(dataset)` -> full-size (image, label, name) one at a time.
"""

from psp_tf import lazy_getattr

# Imported on first use: the readers import TensorFlow (`import psp_tf.data.registry` 14 s measured, see
# psp_tf/__init__.py), and the drivers read light modules of this package (psp_tf.data.augment's
# config) before TensorFlow starts.
_PUBLIC = {
    "AugmentConfig": "psp_tf.data.augment",
    "augment_example": "psp_tf.data.augment",
    "Dataset": "psp_tf.data.base",
    "eval_source": "psp_tf.data.pipeline",
    "train_pipeline": "psp_tf.data.pipeline",
    "DATASETS": "psp_tf.data.registry",
    "dataset_options": "psp_tf.data.registry",
    "open_dataset": "psp_tf.data.registry",
}

__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
