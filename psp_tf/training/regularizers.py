"""L2-SP and plain weight decay over conv kernels (Li et al. 2018, as holyseven's PSPNet-TF used it).

    R = alpha/2 * sum_{w in S} ||w - w0||^2  +  beta/2 * sum_{w in N} ||w||^2

S: conv kernels loaded from --init, with w0 = the loaded values (constants, re-read from --init on a
resume, never from the trained weights). N: every other conv kernel (classifier, PPM, aux head, and
whatever --init did not provide). BN gamma/beta and biases are never regularised. With alpha = 0 it
is plain weight decay: every kernel decays towards 0 with --weight_decay. The 1/2 matches Caffe's
weight_decay (gradient += lambda * w).
"""

import dataclasses
from typing import Dict, List

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class Regularizer:
    """Which kernels are pulled where, and how hard.

    Attributes:
      sp_vars: kernels regularised towards their starting point (set S).
      sp_anchors: w0 for each of `sp_vars`, tf constants of the same shape and dtype.
      new_vars: kernels regularised towards 0 (set N).
      alpha: coefficient of the L2-SP term.
      beta: coefficient of the L2 term.
    """

    sp_vars: List
    sp_anchors: List
    new_vars: List
    alpha: float
    beta: float

    def __call__(self):
        """The regulariser value, a float32 scalar (0 when nothing is regularised)."""
        total = tf.zeros([], tf.float32)
        if self.alpha > 0:
            for var, anchor in zip(self.sp_vars, self.sp_anchors):
                total += 0.5 * self.alpha * tf.reduce_sum(tf.square(_f32(var) - anchor))
        if self.beta > 0:
            for var in self.new_vars:
                total += 0.5 * self.beta * tf.reduce_sum(tf.square(_f32(var)))
        return total


def _f32(var):
    return tf.cast(tf.convert_to_tensor(var), tf.float32)


def conv_kernels(model) -> Dict[str, object]:
    """The conv kernels of `model` by layer name (BN parameters and biases are never regularised)."""
    import keras

    kernels = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernels[layer.name] = layer.kernel
    return kernels


def build_regularizer(model, loaded: Dict[str, np.ndarray], weight_decay, alpha, beta=None):
    """Builds the regulariser for `model` given the kernels `--init` provided.

    Args:
      model: the training model.
      loaded: {conv layer name: kernel array [kh, kw, cin, cout]} as loaded from --init (empty with
        --init none). These are the w0 anchors; they must be the --init values, not a checkpoint's.
      weight_decay: plain decay, used for every kernel when alpha == 0.
      alpha: L2-SP coefficient towards w0 (0 = plain weight decay).
      beta: L2 coefficient of the new layers under L2-SP; defaults to `weight_decay`.

    Returns:
      A Regularizer.
    """
    kernels = conv_kernels(model)
    unknown = sorted(set(loaded) - set(kernels))
    if unknown:
        raise ValueError(f"--init kernels for layers the model does not have: {unknown[:5]}")
    if alpha == 0:
        return Regularizer([], [], list(kernels.values()), 0.0, float(weight_decay))
    sp_vars, anchors, new_vars = [], [], []
    for name, var in kernels.items():
        if name in loaded:
            sp_vars.append(var)
            anchors.append(tf.constant(np.asarray(loaded[name], np.float32)))
        else:
            new_vars.append(var)
    beta = weight_decay if beta is None else beta
    return Regularizer(sp_vars, anchors, new_vars, float(alpha), float(beta))
