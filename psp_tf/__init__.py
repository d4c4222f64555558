"""psp_tf: PSPNet (Zhao et al., CVPR 2017) in TensorFlow 2 / Keras 3, faithful to the author's Caffe release.

Everything is imported on first use: `import psp_tf` alone does not load TensorFlow, so the command-line
tools can start TensorFlow quietly (psp_tf.startup.import_tensorflow_quietly) and a bad input ends in
one error line; it also keeps psp_tf.convert (which imports psp_tf's layers) free of import cycles.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

_LAZY = {
    "build_pspnet": "psp_tf.model",
    "conv_macs": "psp_tf.model",
    "get_preset": "psp_tf.presets",
    "PRESETS": "psp_tf.presets",
    "PSPNetConfig": "psp_tf.presets",
    "load_model": "psp_tf.model_dir",
    "load_caffe_weights": "psp_tf.convert.loader",
    "predict": "psp_tf.evaluation.protocol",
}

__all__ = list(_LAZY)


def lazy_getattr(package, table):
    """A module `__getattr__` that imports `table[name]` (a module path) on first use of `name`,
    and resolves the package's submodules (`psp_tf.data.augment`) without an explicit import."""

    def __getattr__(name):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_getattr(__name__, _LAZY)
