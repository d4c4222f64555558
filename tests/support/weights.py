"""Weights directories for tests, in the converter's layout, and evaluate.py's flags as an object."""

import argparse
import os


def write_weights_dir(model, path):
    """A weights directory in the converter's layout (config.json + model.weights.h5 + checkpoint)."""
    from psp_tf.model_dir import model_metadata, write_model_dir

    os.makedirs(path)
    write_model_dir(model, path, model_metadata(model.psp_config, model.psp_config.name, {"test": True}))
    return path


def eval_flags(**overrides):
    values = dict(weights=None, dataset="synthetic", data_dir=None, split="val", scales="1.0", flip=True,
                  batch_size=2, max_images=1, output_dir=None, overwrite=False, cityscapes_submission=False,
                  expect=None, tolerance=0.3, strategy="default", precision="float32", dataset_option=())
    values.update(overrides)
    return argparse.Namespace(**values)
