"""Caffe-compatible building blocks: the layer-name mapping, Caffe's Interp, conv+BN, mean subtraction.

Sources: the author's `src/caffe/layers/interp_layer.cpp` / `util/interp.cpp` (align-corners bilinear),
`bn_layer.cpp` (eps 1e-5) and `pooling_layer.cpp` (ceil rule); see docs/caffe_reference.md §2.
"""

import contextlib
import contextvars
import functools

import keras
import numpy as np
from keras import layers

# The custom Caffe BN layer: y = slope * (x - mean) / sqrt(var + eps) + bias with eps = 1e-5 (the
# proto default; no prototxt sets it). Keras defaults to 1e-3, which costs accuracy on converted nets.
BN_EPSILON = 1e-5
# bn_param { momentum: 0.95 } in every prototxt: Caffe updates blob = 0.05 * batch + 0.95 * blob,
# which is exactly Keras's moving = momentum * moving + (1 - momentum) * batch.
BN_MOMENTUM = 0.95
_KERNELS_LOADED_NEXT = contextvars.ContextVar("psp_tf_kernels_loaded_next", default=False)


def keras_name(caffe_name: str) -> str:
    """Maps a Caffe layer name to a Keras layer name.

    Keras 3 forbids '/' in layer names, and the author's names use it only to attach a BN or ReLU to
    its conv (`conv1_1_3x3_s2/bn`). Replacing it with '_' keeps every name in the three prototxts
    distinct (tests/test_layers.py checks this), so the converter can load strictly by name.
    """
    return caffe_name.replace("/", "_")


def interp_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The [out_size, in_size] float32 matrix of Caffe's Interp along one axis.

    Follows `caffe_cpu_interp2` to the float: `rheight = float(in - 1) / (out - 1)` (0 for out == 1),
    `h1r = rheight * h2` in float32, `h1 = int(h1r)`, the neighbour clamped at the last row, weights
    `1 - lambda` and `lambda`. This is align-corners bilinear (corner pixels map to corner pixels),
    which TF2's `tf.image.resize` (half-pixel centres) does not reproduce.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"interp sizes must be positive, got {in_size} -> {out_size}")
    # A copy: the cached one is shared (an eager backend would rebuild it on every call).
    return _cached_interp_matrix(int(in_size), int(out_size)).copy()


@functools.lru_cache(maxsize=None)
def _cached_interp_matrix(in_size, out_size):
    matrix = np.zeros((out_size, in_size), np.float32)
    if in_size == out_size:
        np.fill_diagonal(matrix, 1.0)
    else:
        ratio = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0)
        dst = np.arange(out_size)
        src = ratio * dst.astype(np.float32)  # float32 products, as Caffe's loop computes them
        low = src.astype(np.int64)  # int() truncation; src >= 0
        step = (low < in_size - 1).astype(np.int64)
        weight = src - low.astype(np.float32)
        # Two passes in Caffe's order: where the neighbour is clamped, (0 + (1 - w)) + w as it adds.
        np.add.at(matrix, (dst, low), np.float32(1) - weight)
        np.add.at(matrix, (dst, low + step), weight)
    matrix.flags.writeable = False
    return matrix


def resize_align_corners(x, size):
    """Caffe Interp of a [B, H, W, C] tensor to [B, size[0], size[1], C], in the tensor's dtype.

    Written as two small matrix products (keras.ops, so any Keras backend) with the exact per-axis
    matrices instead of a gather, so that it runs unchanged in a SavedModel, under XLA, on TPU and
    in bfloat16/float16. The matrices are built from the input's static size.

    Raises:
      ValueError: the input's height or width is not known statically.
    """
    in_h, in_w = x.shape[1], x.shape[2]
    if in_h is None or in_w is None:
        raise ValueError(f"Caffe Interp needs a static input size, got {tuple(x.shape)}: build the "
                         f"network for the size it runs at")
    out_h, out_w = int(size[0]), int(size[1])
    if (in_h, in_w) == (out_h, out_w):
        return x
    rows = keras.ops.convert_to_tensor(interp_matrix(int(in_h), out_h), dtype=x.dtype)
    cols = keras.ops.convert_to_tensor(interp_matrix(int(in_w), out_w), dtype=x.dtype)
    x = keras.ops.einsum("oh,bhwc->bowc", rows, x)
    return keras.ops.einsum("pw,bowc->bopc", cols, x)


@keras.saving.register_keras_serializable(package="psp_tf")
class Interp(layers.Layer):
    """Caffe's Interp layer with a fixed output size (align-corners bilinear)."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))

    def call(self, x):
        return resize_align_corners(x, self.size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size[0], self.size[1], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="psp_tf")
class MeanSubtraction(layers.Layer):
    """Subtracts the per-channel training mean, as the author's `pre_img.m` does (no std division)."""

    def __init__(self, mean, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, x):
        return x - keras.ops.convert_to_tensor(self.mean, dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean}


@contextlib.contextmanager
def kernels_loaded_next():
    """Within it, conv kernels start as zeros, not he_normal: for a network whose weights load next.

    Under JAX every kernel shape compiles a truncated-normal program of its own (77 of the 80 s of
    building 'tiny' on two busy cores); zeros are free and the file overwrites them anyway
    (psp_tf.model_dir.load_weights_file refuses a file that leaves any layer unloaded).
    """
    token = _KERNELS_LOADED_NEXT.set(True)
    try:
        yield
    finally:
        _KERNELS_LOADED_NEXT.reset(token)


def conv2d(x, filters, kernel, **kwargs):
    """A Conv2D (he_normal kernel) applied to `x`; within `kernels_loaded_next` its kernel starts as zeros.

    Either way the layer's config names he_normal once its kernel exists, so a model rebuilt from a
    loaded model's layer configs (keras.models.clone_model) initialises as a normal build does.
    """
    # Constructed either way: it draws its default seed from Python's RNG, as the string "he_normal"
    # would, so every later default seed (dropout's) is the one a normal build gives.
    he_normal = keras.initializers.HeNormal()
    start = keras.initializers.Zeros() if _KERNELS_LOADED_NEXT.get() else he_normal
    conv = layers.Conv2D(filters, kernel, kernel_initializer=start, **kwargs)
    y = conv(x)  # builds the kernel
    conv.kernel_initializer = he_normal
    return y


def synced_moments(x, axes):
    """The batch mean and biased variance of `x` over `axes` and over all replicas, about the global mean.

    Two rounds of all-reduce: the sums and counts first, then the squared deviations from the global
    mean, as tf.nn.moments computes them on one device; the statistics are BN's biased batch mean and
    variance (docs/caffe_reference.md §2.1). Outside any strategy the default replica context's
    all-reduce is the identity; in a cross-replica context (no replica to sum over) it is tf.nn.moments.

    Returns:
      (mean, variance), float32 of x's shape without `axes`.
    """
    import tensorflow as tf  # only the TensorFlow backend synchronises BN (Keras refuses it elsewhere)

    x = tf.cast(x, tf.float32)  # the layer already computes in float32; a direct fp16 call must not overflow
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.nn.moments(x, axes)
    local_count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      [tf.reduce_sum(x, axes, keepdims=True), local_count])
    mean = total / count
    # stop_gradient as in tf.nn.moments: the deviations' sum is 0, so the mean's gradient path through
    # the variance is 0 and the one-device gradient graph is kept.
    squares = tf.reduce_sum(tf.math.squared_difference(x, tf.stop_gradient(mean)), axes, keepdims=True)
    variance = context.all_reduce(tf.distribute.ReduceOp.SUM, squares) / count
    return tf.squeeze(mean, axes), tf.squeeze(variance, axes)


@keras.saving.register_keras_serializable(package="psp_tf")
class SyncBatchNormalization(layers.BatchNormalization):
    """BatchNormalization synchronised across replicas, with the variance taken about the global mean.

    Keras' own `synchronized=True` takes the variance as E[x²] - E[x]² from one round of sums, which
    cancels in float32: for a channel of mean m and standard deviation s, n values, the variance's
    relative error grows to about 2^-24·(m/s)²·√n (m/s = 30 and a few thousand values: ~3e-3), where
    one device (tf.nn.moments) subtracts the mean first. This layer computes what one
    device computes (synced_moments), at the price of a second all-reduce per layer.
    """

    def __init__(self, **kwargs):
        kwargs["synchronized"] = True
        super().__init__(**kwargs)

    def _moments(self, inputs, mask):
        if mask is not None:  # never in PSPNet; Keras' masked moments are not synchronised
            return super()._moments(inputs, mask)
        return synced_moments(inputs, self._reduction_axes)


def conv_bn(x, filters, kernel, caffe_name, *, stride=1, dilation=1, relu=True, sync_bn=False,
            dtype=None):
    """Caffe `Convolution` (no bias) + `BN` (+ `ReLU`), named after the Caffe layers.

    Caffe pads explicitly (`pad: dilation * (kernel - 1) / 2` in every prototxt), so we do the same
    with ZeroPadding2D + 'valid'. Keras 'same' pads (0, 1) on even inputs where Caffe pads (1, 1).
    """
    pad = dilation * (kernel - 1) // 2
    name = keras_name(caffe_name)
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad", dtype=dtype)(x)
    x = conv2d(x, filters, kernel, strides=stride, dilation_rate=dilation, padding="valid", use_bias=False,
               name=name, dtype=dtype)
    batch_norm = SyncBatchNormalization if sync_bn else layers.BatchNormalization
    x = batch_norm(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=keras_name(caffe_name + "/bn"), dtype=dtype)(x)
    if relu:
        x = layers.ReLU(name=keras_name(caffe_name + "/relu"), dtype=dtype)(x)
    return x


def caffe_pool_output_size(size, kernel, stride, pad):
    """Pooling output size by Caffe's ceil rule (`pooling_layer.cpp` Reshape)."""
    pooled = int(np.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (pooled - 1) * stride >= size + pad:
        pooled -= 1  # the last window must start inside the image or the leading pad
    return pooled


def max_pool_caffe(x, kernel, stride, pad, caffe_name, dtype=None):
    """Caffe MAX pooling with its ceil rule, for non-negative (post-ReLU) inputs.

    Caffe clips each window to the image; on inputs >= 0 that equals zero padding as long as every
    window holds a real pixel, which the ceil rule guarantees. The trailing pad is sized so that
    Keras's floor rule yields Caffe's ceil size on any input (they agree at 473 and 713 anyway).
    """
    name = keras_name(caffe_name)
    pads = []
    for size in (int(x.shape[1]), int(x.shape[2])):
        pooled = caffe_pool_output_size(size, kernel, stride, pad)
        pads.append((pad, max(0, (pooled - 1) * stride + kernel - size - pad)))
    x = layers.ZeroPadding2D(tuple(pads), name=f"{name}_pad", dtype=dtype)(x)
    return layers.MaxPooling2D(kernel, stride, padding="valid", name=name, dtype=dtype)(x)
