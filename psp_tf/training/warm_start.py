"""--init: where the starting weights come from (a converted PSPNet, a Keras ImageNet ResNet, or none).

Returns the conv kernels it loaded, which are the L2-SP anchors w0 (psp_tf.training.regularizers), and
the names of the layers it provided (the rest are "new" layers: head_lr_mult and L2 towards 0).
On a resume the same function runs again before the checkpoint is restored, so w0 always comes from
--init, never from the trained weights.
"""

import dataclasses
import os
from typing import Dict, FrozenSet

import numpy as np

from psp_tf.errors import UserError
from psp_tf.training import keras_resnet

CLASSIFIERS = ("conv6", "conv6_aux")


@dataclasses.dataclass
class InitResult:
    """What --init put into the model.

    Attributes:
      kernels: {conv layer name: loaded kernel [kh, kw, cin, cout]}: the L2-SP anchors.
      layers: names of every layer whose weights were loaded.
      description: one line for the log.
    """

    kernels: Dict[str, np.ndarray]
    layers: FrozenSet[str]
    description: str


def initialize(model, init, *, class_names=None, fresh_classifier=False):
    """Loads `init` into `model` (a build_pspnet training model) and says what it loaded.

    Args:
      model: the model to fill.
      init: 'none', a converted PSPNet directory (psp-convert), or a keras.applications
        ResNet50/101 ImageNet weights file (.h5 / .weights.h5) for presets with stem 'resnet'.
      class_names: the training dataset's class names (to decide whether the classifier is reusable).
      fresh_classifier: start conv6 / conv6_aux from scratch even when the classes agree.

    Raises:
      UserError: the file or directory is missing, unreadable or does not fit the model.
    """
    if init in (None, "", "none"):
        return InitResult({}, frozenset(), "--init none: every layer starts from random (He) init")
    if os.path.isdir(init):
        return _from_pspnet(model, init, class_names, fresh_classifier)
    if os.path.isfile(init) and init.endswith(".h5"):
        return InitResult(*keras_resnet.load_into(model, init))
    raise UserError(f"--init {init}: not 'none', a converted PSPNet directory, or a Keras ResNet .h5 file")


def _from_pspnet(model, directory, class_names, fresh_classifier):
    from psp_tf.model_dir import load_model

    try:
        source = load_model(directory)
    except UserError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--init {directory}: cannot load a converted PSPNet ({e})") from None
    src_config = source.psp_config
    dst_config = model.psp_config
    for field in ("stage_blocks", "stem", "conv3_stride_on", "width", "stem_width", "bins",
                  "ppm_channels", "head_channels"):
        if getattr(src_config, field) != getattr(dst_config, field):
            raise UserError(f"--init {directory} is a {src_config.name} network whose {field} "
                            f"{getattr(src_config, field)} differs from --preset {dst_config.name}'s "
                            f"{getattr(dst_config, field)}")
    same_classes = class_names is not None and tuple(src_config.class_names) == tuple(class_names)
    if not same_classes and not fresh_classifier:
        raise UserError(f"--init {directory} has a {src_config.num_classes}-class classifier "
                        f"({src_config.dataset}) but the training data has {len(class_names or ())} "
                        f"other classes; pass --fresh_classifier to train a new one")
    skip = set(CLASSIFIERS) if fresh_classifier or not same_classes else set()
    kernels, loaded = {}, set()
    for layer in source.layers:
        if not layer.weights or layer.name in skip:
            continue
        target = model.get_layer(layer.name)
        target.set_weights(layer.get_weights())
        loaded.add(layer.name)
        if hasattr(layer, "kernel"):
            kernels[layer.name] = np.asarray(layer.kernel)
    what = "a new classifier" if skip else "its classifier"
    return InitResult(kernels, frozenset(loaded),
                      f"--init {directory}: {len(loaded)} layers of {src_config.name}, {what}")

