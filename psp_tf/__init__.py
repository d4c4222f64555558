"""psp_tf: PSPNet (Zhao et al., CVPR 2017) in TensorFlow 2 / Keras 3, faithful to the author's Caffe release.

The model is imported eagerly; the converter, loader and evaluator on first use, so that
`import psp_tf` stays light and free of import cycles (convert/ imports psp_tf's layers).
"""

import importlib

from psp_tf.model import build_pspnet, conv_macs
from psp_tf.presets import PRESETS, PSPNetConfig, get_preset

__version__ = "0.1.0"

_LAZY = {
    "load_model": "psp_tf.load",
    "load_caffe_weights": "convert.loader",
    "predict": "psp_tf.evaluation.protocol",
}

__all__ = ["build_pspnet", "conv_macs", "get_preset", "PRESETS", "PSPNetConfig", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'psp_tf' has no attribute {name!r}")
