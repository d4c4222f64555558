"""Weights directories for tests, in the converter's layout, and the EvalConfig of a small evaluation."""

import os


def write_weights_dir(model, path):
    """A weights directory in the converter's layout (config.json + model.weights.h5 + checkpoint)."""
    from psp_tf.model_dir import model_metadata, write_model_dir

    os.makedirs(path)
    write_model_dir(model, path, model_metadata(model.psp_config, model.psp_config.name, {"test": True}))
    return path


def eval_config(**overrides):
    """An EvalConfig for the synthetic dataset's val split, one image, unless `overrides` say otherwise."""
    from psp_tf.evaluation.config import EvalConfig

    values = dict(dataset="synthetic", split="val", max_images=1)
    values.update(overrides)
    return EvalConfig(**values)
