"""The trained model as a weights directory that `psp_tf.load_model` and `evaluate.py --weights` read.

Same layout as the converter's output (config.json with the resolved PSPNetConfig, model.weights.h5
of the inference network, no aux head), written atomically to `<workdir>/model`.
"""

from psp_tf.model import build_pspnet
from psp_tf.model_dir import model_metadata, write_model_dir
from psp_tf.outputs import atomic_directory


def save_trained_model(model, directory, train_config, step, metrics=None):
    """Writes the inference network of `model` (a build_pspnet model, aux head or not).

    The weights are copied by layer name into a fresh float32 inference model, so the file has
    exactly the layout `load_model` rebuilds, whatever the training precision or heads.

    Args:
      model: the trained model.
      directory: output directory (replaced atomically).
      train_config: the resolved run; its `network` is the network written (recorded in config.json).
      step: the number of training steps done.
      metrics: the final evaluation metrics (fractions), or None.
    """
    config = train_config.network
    inference = build_pspnet(config)
    for layer in inference.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    source = {"trained_by": "train.py", "workdir": train_config.workdir, "steps": int(step),
              "dataset": train_config.dataset, "init": train_config.init}
    evaluation = {k: v for k, v in (metrics or {}).items() if isinstance(v, float)} or None
    meta = model_metadata(config, train_config.preset, source, evaluation=evaluation)
    with atomic_directory(directory, overwrite=True) as tmp:
        write_model_dir(inference, tmp, meta)
    return directory
