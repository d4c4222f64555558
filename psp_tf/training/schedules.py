"""Learning-rate schedule and per-layer learning-rate multipliers (PSPNet §5.1, Caffe's lr_mult).

poly: lr(step) = base_lr * (1 - step / steps) ** power (power 0.9), as the author's Caffe solver.
Layers that --init did not provide (PPM, conv5_4, classifiers, aux head) train at head_lr_mult x lr.
"""

import tensorflow as tf


def poly_lr(step, base_lr, steps, power):
    """The poly learning rate at `step` (0-based), a float32 tensor; graph-safe (TPU-safe).

    Args:
      step: int or scalar tensor, the number of updates done so far.
      base_lr: learning rate at step 0.
      steps: total number of steps; the rate reaches 0 at `steps`.
      power: the poly exponent (0.9).
    """
    progress = tf.cast(step, tf.float32) / float(steps)
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    return base_lr * tf.pow(1.0 - progress, power)


def gradient_multipliers(variables, new_layer_names, head_lr_mult):
    """Per-variable factors that turn the base lr into each layer's lr.

    For SGD with momentum (v <- m v - lr g) scaling a variable's gradient by c is exactly the same
    update as scaling its learning rate by c, which is what Caffe's lr_mult does: the weight-decay
    gradient is scaled with it, as in Caffe.

    Args:
      variables: the trainable variables, in the optimizer's order.
      new_layer_names: names of layers that train at head_lr_mult x lr. Empty when --init is none:
        then nothing is pretrained and every layer trains at the base lr.
      head_lr_mult: the multiplier.

    Returns:
      A list of Python floats, one per variable.
    """
    new_layer_names = set(new_layer_names)
    return [head_lr_mult if _layer_of(v) in new_layer_names else 1.0 for v in variables]


def _layer_of(variable):
    """The owning layer's name from a Keras 3 variable path ('conv6/kernel' -> 'conv6')."""
    path = getattr(variable, "path", variable.name)
    return path.rsplit("/", 1)[0]
