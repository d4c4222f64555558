"""The trained model as a weights directory that `psp_tf.load_model` and `evaluate.py --weights` read.

Same layout as the converter's output (config.json with the resolved PSPNetConfig, model.weights.h5
of the inference network, no aux head), written atomically to `<workdir>/model`.
"""

import json
import os

from psp_tf.errors import atomic_directory

CONFIG_FILE = "config.json"  # the names psp_tf.load expects
WEIGHTS_FILE = "model.weights.h5"


def save_trained_model(model, directory, train_config, step, metrics=None):
    """Writes the inference network of `model` (a build_pspnet model, aux head or not).

    The weights are copied by layer name into a fresh float32 inference model, so the file has
    exactly the layout `load_model` rebuilds, whatever the training precision or heads.

    Args:
      model: the trained model (`psp_config` attached).
      directory: output directory (replaced atomically).
      train_config: the TrainConfig (recorded in config.json).
      step: the number of training steps done.
      metrics: the final evaluation metrics (fractions), or None.
    """
    from psp_tf.model import build_pspnet

    config = model.psp_config
    inference = build_pspnet(config)
    for layer in inference.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    meta = {
        "preset": train_config.preset,
        "config": config.to_dict(),
        "num_classes": config.num_classes,
        "class_names": list(config.class_names),
        "crop_size": list(config.crop_size),
        "base_size": config.base_size,
        "mean": list(config.mean),
        "input_channel_order": "RGB",
        "source": {"trained_by": "train.py", "workdir": train_config.workdir, "steps": int(step),
                   "dataset": train_config.dataset, "init": train_config.init},
        "evaluation": {k: v for k, v in (metrics or {}).items() if isinstance(v, float)} or None,
    }
    with atomic_directory(directory, overwrite=True) as tmp:
        inference.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2)
    return directory
