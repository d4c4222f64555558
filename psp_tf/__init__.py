"""psp_tf: PSPNet (Zhao et al., CVPR 2017) in TensorFlow 2 / Keras 3, faithful to the author's Caffe release.

The public names below need TensorFlow, so they are imported on first use. Measured (2-core AMD EPYC
Zen 4, shared): `import psp_tf` 0.4 s and 13 MB; `import psp_tf.model` (TensorFlow and Keras) 12-18 s
and 730 MB. Eager imports here would cost that on every tool's `--help` and bad flag, since importing
any psp_tf module (psp_tf.cli.train, a light config) first runs this file.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "build_pspnet": "psp_tf.model",
    "conv_macs": "psp_tf.model",
    "get_preset": "psp_tf.presets",
    "PRESETS": "psp_tf.presets",
    "PSPNetConfig": "psp_tf.presets",
    "load_model": "psp_tf.model_dir",
    "load_caffe_weights": "psp_tf.convert.loader",
    "predict": "psp_tf.evaluation.protocol",
}

__all__ = list(_PUBLIC)


def lazy_getattr(package, table):
    """A module `__getattr__` (PEP 562) that imports `table[name]` (a module path) on first use of `name`."""

    def __getattr__(name):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_getattr(__name__, _PUBLIC)
