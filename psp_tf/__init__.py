"""psp_tf: PSPNet (Zhao et al., CVPR 2017) in TensorFlow 2 / Keras 3, faithful to the author's Caffe release."""

from psp_tf.model import build_pspnet, conv_macs
from psp_tf.presets import PRESETS, PSPNetConfig, get_preset

__version__ = "0.1.0"
__all__ = ["build_pspnet", "conv_macs", "get_preset", "PRESETS", "PSPNetConfig"]
