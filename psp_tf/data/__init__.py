"""Datasets as users have them on disk, and the tf.data pipelines that feed training and evaluation.

`open_dataset(name, data_dir, split, **options)` -> Dataset (len, examples, num_classes, class_names,
palette, ignore_label, read(i)); `train_pipeline(...)` -> augmented, deterministic, resumable batches;
`eval_source(dataset)` -> full-size (image, label, name) one at a time.
"""

from psp_tf.data.augment import AugmentConfig, augment_example
from psp_tf.data.base import Dataset
from psp_tf.data.pipeline import eval_source, train_pipeline
from psp_tf.data.registry import DATASETS, dataset_options, open_dataset

__all__ = ["AugmentConfig", "DATASETS", "Dataset", "augment_example", "dataset_options", "eval_source",
           "open_dataset", "train_pipeline"]
