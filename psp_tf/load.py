"""The psp_tf weights directory: `write_model_dir` writes it (convert, train.py), `load_model` reads it.

The directory holds `config.json` (the resolved PSPNetConfig, label space, input protocol and
provenance), `model.weights.h5` (Keras weights of the inference network) and `ckpt.*` (the same
weights as a tf.train.Checkpoint); the model is rebuilt from the config with `build_pspnet`.
"""

import dataclasses
import json
import os

from psp_tf.errors import UserError
from psp_tf.presets import PaperResult, PSPNetConfig, get_preset

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
CHECKPOINT_PREFIX = "ckpt"


def model_metadata(config: PSPNetConfig, preset: str, source: dict, **extra) -> dict:
    """The config.json content common to every weights directory, plus `extra` fields."""
    return {
        "preset": preset,
        "config": config.to_dict(),
        "num_classes": config.num_classes,
        "class_names": list(config.class_names),
        "crop_size": list(config.crop_size),
        "base_size": config.base_size,
        "mean": list(config.mean),
        # The model takes RGB whatever the source: the converter folds BGR into the first conv.
        "input_channel_order": "RGB",
        "source_channel_order": config.source_channel_order,
        "source": source,
        **extra,
    }


def write_model_dir(model, directory, metadata):
    """Writes the checkpoint, the Keras weights and config.json of `model` into `directory`.

    Callers pass a temporary directory from psp_tf.errors.atomic_directory, so that a failure
    leaves nothing behind.
    """
    import tensorflow as tf

    tf.train.Checkpoint(model=model).write(os.path.join(directory, CHECKPOINT_PREFIX))
    model.save_weights(os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(metadata, f, indent=2)


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_from_dict(fields) -> PSPNetConfig:
    """Rebuilds a PSPNetConfig from `PSPNetConfig.to_dict()` output read back from JSON (lists -> tuples).

    Raises:
      ValueError: unknown keys or invalid values.
    """
    known = {f.name for f in dataclasses.fields(PSPNetConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}")
    values = {k: _tuples(v) for k, v in fields.items()}
    if values.get("paper") is not None:
        values["paper"] = PaperResult(**fields["paper"])
    return get_preset(PSPNetConfig(**values))


def read_config(output_dir) -> dict:
    """The parsed config.json of a converted model directory.

    Raises:
      UserError: the directory or its config.json is missing or unreadable.
    """
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{output_dir} is not a converted model directory (no {CONFIG_FILE})")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def load_model(output_dir, precision="float32"):
    """Builds the converted network and loads its weights.

    Args:
      output_dir: a directory written by `python -m convert`.
      precision: 'float32' or 'bfloat16' (mixed precision; logits stay float32).

    Returns:
      keras.Model: float32 [B, H, W, 3] RGB 0..255 -> logits [B, H, W, K], with `model.psp_config`.

    Raises:
      UserError: the directory is not a converted model, or its files do not match.
    """
    from psp_tf.model import build_pspnet

    if precision not in ("float32", "bfloat16"):
        raise UserError(f"precision={precision!r} is not one of 'float32', 'bfloat16'")
    meta = read_config(output_dir)
    try:
        config = config_from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{output_dir}/{CONFIG_FILE} holds no valid PSPNet config: {e}") from None
    weights = os.path.join(output_dir, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise UserError(f"{output_dir} has no {WEIGHTS_FILE}")
    model = build_pspnet(config, precision=precision)
    try:
        model.load_weights(weights)
    except ValueError as e:
        raise UserError(f"{weights} does not fit the model of {CONFIG_FILE}: {e}") from None
    return model
