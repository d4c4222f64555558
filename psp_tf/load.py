"""`load_model(output_dir)`: the ready inference model from a `python -m convert` output directory.

The directory holds `config.json` (the resolved PSPNetConfig) and `model.weights.h5`; the model is
rebuilt from the config with `build_pspnet` and the weights are loaded by Keras.
"""

import dataclasses
import json
import os

from psp_tf.errors import UserError
from psp_tf.presets import PaperResult, PSPNetConfig, get_preset

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"


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
