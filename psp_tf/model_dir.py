"""The psp_tf weights directory: `write_model_dir` writes it (convert, train.py), `load_model` reads it.

The directory holds `config.json` (the resolved PSPNetConfig, label space, input protocol and
provenance), `model.weights.h5` (Keras weights of the inference network) and `ckpt.*` (the same
weights as a tf.train.Checkpoint); the model is rebuilt from the config with `build_pspnet`.
"""

import hashlib
import json
import os
import re
import warnings

from psp_tf.errors import UserError
from psp_tf.layers import kernels_loaded_next
from psp_tf.model import build_pspnet
from psp_tf.presets import PSPNetConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
CHECKPOINT_PREFIX = "ckpt"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # what load_model reads, hence what decides a model's results


def weights_digest(directory, names=MODEL_FILES):
    """sha256 over the names and contents of the files `names` of a weights directory.

    The default is what load_model reads: the TensorFlow checkpoint beside them and anything else kept
    in the directory neither changes the model nor costs a read. `names=None`: every file in the
    directory (what psp_tf before 2026-12-05 recorded, so older records can still be matched).

    Raises:
      OSError: a file cannot be read.
    """
    digest = hashlib.sha256()
    names = sorted(os.listdir(directory)) if names is None else names
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


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

    Callers pass a temporary directory from psp_tf.outputs.atomic_directory, so that a failure
    leaves nothing behind.
    """
    import tensorflow as tf

    tf.train.Checkpoint(model=model).write(os.path.join(directory, CHECKPOINT_PREFIX))
    model.save_weights(os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(metadata, f, indent=2)


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
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise UserError(f"cannot read {path}: {e}") from None


def load_model(output_dir, precision="float32"):
    """Builds the converted network and loads its weights, under any Keras backend.

    Only config.json and model.weights.h5 are read (the TensorFlow checkpoint beside them is for
    tf.train users), so the same directory loads under KERAS_BACKEND=tensorflow, jax or torch.

    Args:
      output_dir: a directory written by psp-convert or psp-train (`<workdir>/model`).
      precision: 'float32' or 'bfloat16' (mixed precision; logits stay float32).

    Returns:
      psp_tf.model.PSPNet: float32 [B, H, W, 3] RGB 0..255 -> logits [B, H, W, K]; its
      `psp_config` is the config of config.json.

    Raises:
      UserError: the directory is not a converted model, or its files do not match.
    """
    if precision not in ("float32", "bfloat16"):
        raise UserError(f"precision={precision!r} is not one of 'float32', 'bfloat16'")
    meta = read_config(output_dir)
    try:
        config = PSPNetConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{output_dir}/{CONFIG_FILE} holds no valid PSPNet config: {e}") from None
    weights = os.path.join(output_dir, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise UserError(f"{output_dir} has no {WEIGHTS_FILE}")
    try:
        with kernels_loaded_next():  # the file replaces them: no random draw (a compile per shape on JAX)
            model = build_pspnet(config, precision=precision)
    except ValueError as e:  # valid fields that make no network, e.g. a crop_size the pyramid bins do not divide
        raise UserError(f"{output_dir}/{CONFIG_FILE} holds no valid PSPNet config: {e}") from None
    load_weights_file(model, weights, f"the {config.name} model of {CONFIG_FILE} ({config.num_classes} classes)")
    return model


# Keras' message for a misshapen variable: '... object <Conv2D name=conv6, built=True>: ... The shape
# of the target variable ... variable.shape=(1, 1, 32, 4), Received: value.shape=(1, 1, 32, 5)'.
_MISMATCH = re.compile(r"object <\w+ name=([^,>]+).*?variable\.shape=(\([^)]*\)).*?value\.shape=(\([^)]*\))",
                       re.S)


def load_weights_file(model, path, what):
    """`model.load_weights(path)`, every failure one UserError line naming the file (and the layer).

    Keras reports a truncated or foreign file as an h5py OSError traceback and a misshapen layer as a
    ValueError holding the variable's whole value (dozens of lines); a file without some layers only
    warns ("Skipping nested container") and leaves them freshly initialised.

    Args:
      model: the built Keras model.
      path: a Keras `.weights.h5` file.
      what: the model, for the message ("the tiny model of config.json (4 classes)").

    Raises:
      UserError: unreadable file, or weights that do not fit `model`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except OSError as e:  # h5py: empty, truncated, not HDF5
            reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
            raise UserError(f"{path}: cannot read Keras weights ({reason.strip()})") from None
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(f"{path} does not fit {what}: {_mismatch_line(e)}") from None
    skipped = [w for w in caught if "freshly-initialized" in str(w.message)]
    if skipped:
        raise UserError(f"{path} does not fit {what}: some layers have no weights in the file")
    for w in caught:  # anything else Keras had to say stays a warning
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _mismatch_line(error):
    text = str(error)
    found = _MISMATCH.search(text)
    if found:
        layer, want, got = found.groups()
        return f"layer {layer} holds shape {got} in the file, the model needs {want}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
