"""Datasets as users have them on disk, and the tf.data pipelines that feed training and evaluation.

`open_dataset(name, data_dir, split, options=parse_options(name, ("k=v", ...)))` -> Dataset (len,
examples, num_classes, class_names, palette, ignore_label, read(i), and the streams of base.Dataset);
`train_pipeline(..., augment=AugmentConfig.for_network(network))` -> augmented, deterministic,
resumable batches; `eval_source(dataset)` -> full-size (image, label, name) one at a time.
"""

from psp_tf import lazy_getattr

# Imported on first use: the readers import TensorFlow, and the drivers read this package's light
# modules (config, options) before TensorFlow starts.
_LAZY = {
    "AugmentConfig": "psp_tf.data.config",
    "augment_example": "psp_tf.data.augment",
    "Dataset": "psp_tf.data.base",
    "eval_source": "psp_tf.data.pipeline",
    "train_pipeline": "psp_tf.data.pipeline",
    "DATASETS": "psp_tf.data.registry",
    "dataset_options": "psp_tf.data.registry",
    "parse_options": "psp_tf.data.registry",
    "open_dataset": "psp_tf.data.registry",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, _LAZY)
