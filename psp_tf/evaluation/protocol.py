"""The author's test-time protocol end to end: scales, resize, sliding window, flip, blending, argmax.

Source: evaluation/eval_sub.m and scale_process.m (docs/caffe_reference.md §3.2-3.5). Two forms of
the same steps: `predict` (and the evaluator) stream images through a compiled device step of static
shape with the variable-size work on the host (psp_tf.evaluation.stream); `protocol_graph` is the
whole protocol as one TensorFlow graph for the exported SavedModel. Memory is bounded by the network's
work, not by the image: tiles are blended as their batch finishes, scales run one after another, and
the full-size stage runs in row strips, so no [H, W, K] map exists unless asked for.
"""

import collections
import dataclasses
import math
import weakref
from typing import Tuple

import numpy as np
import tensorflow as tf

from psp_tf.distribute import accelerator_visible
from psp_tf.errors import UserError
from psp_tf.evaluation import full_size, stream
from psp_tf.evaluation.config import MULTI_SCALES, scales_from_text  # noqa: F401 (MULTI_SCALES: public)
from psp_tf.evaluation.full_size import full_size_result
from psp_tf.evaluation.resize import imresize, scaled_size
from psp_tf.evaluation.sliding_window import blend_add, blend_finish, blend_start, make_tiles, merge_flip
from psp_tf.memory import Memory, usable_memory
from psp_tf.model import PRECISIONS, PSPNet, build_pspnet
from psp_tf.presets import size_pair

DEFAULT_BATCH_SIZE = 2

Prediction = collections.namedtuple("Prediction", "labels probabilities")


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """Test-time settings. `batch_size` counts network inputs per forward pass and replica (a tile and
    its mirror image are two); `compiled` runs the network step with XLA. The results depend on
    neither beyond float rounding."""

    scales: Tuple[float, ...] = (1.0,)
    flip: bool = True
    crop_size: Tuple[int, int] = (473, 473)
    base_size: int = 512
    mean: Tuple[float, float, float] = (123.68, 116.779, 103.939)
    batch_size: int = DEFAULT_BATCH_SIZE
    compiled: bool = True


def parse_scales(text, base_size=None, num_classes=None):
    """'1.0' | 'ms' | '0.5,1.0,1.5' -> tuple of positive floats (config.scales_from_text).

    With `base_size` and `num_classes` (a model's), also refuses a scale whose work cannot fit in
    the memory this process may use (`check_scale_memory`).

    With `base_size`, also refuses a scale under 1/base_size: the image would shrink to a long side
    under 2 pixels (and the scales' weights s² can underflow to 0).

    Raises:
      UserError: not numbers, a scale <= 0, too small for the base size, or too large for the memory.
    """
    try:
        values = scales_from_text(text)
    except ValueError as e:
        raise UserError(f"--scales={text!r}: {e}") from None
    if base_size is not None and min(values) * base_size < 1:
        shown = text if isinstance(text, str) else ",".join(f"{v:g}" for v in values)
        raise UserError(f"--scales={shown}: {min(values):g} would shrink images to a long side under 2 pixels "
                        f"(base_size {base_size}: every scale must be at least 1/{base_size} = {1 / base_size:.4g})")
    if base_size is not None and num_classes is not None:
        check_scale_memory(values, base_size, num_classes)
    return values


def check_scale_memory(scales, base_size, num_classes, memory=None):
    """Refuses a scale whose class-score map cannot fit in memory, before any work starts.

    eval_sub.m resizes the image to a long side of base_size·s + 1 whatever its size, and the protocol
    holds, per pixel at that size, the image resized in float64 (3 × 8 bytes, MATLAB's imresize) and
    later float32 scores of every class (K × 4 bytes, blended tiles before the resize back): for a
    square image at least L² · max(24, 4K) bytes. Far past the memory that ends in a ResourceExhausted
    traceback minutes later (e.g. --scales 1000).

    `memory`: bytes available (default: the machine's RAM, or its cgroup's limit where that is less:
    psp_tf.memory).

    Raises:
      UserError: naming --scales, the scaled size, the bytes needed and the largest scale that fits.
    """
    usable = usable_memory() if memory is None else Memory(memory, "this machine has") if memory else None
    if usable is None:
        return
    memory, source = usable.bytes, usable.source
    per_pixel = max(3 * 8, 4 * num_classes)
    for scale in scales:
        side = math.ceil(base_size * scale + 1)
        need = side * side * per_pixel
        if need > memory:
            largest = (math.sqrt(memory / per_pixel) - 1) / base_size
            raise UserError(
                f"--scales: scale {scale:g} resizes images to a long side of {side} px, where the "
                f"protocol's buffers ({num_classes} float32 class scores per pixel) need "
                f"{_gigabytes(need)} for a square image; {source} {_gigabytes(memory)} "
                f"(the largest scale that fits is {largest:.3g})")


def tile_bytes(model):
    """A lower bound of the memory one tile holds in a device step: its float32 input while the
    network's largest layer output (often the logits after the final Interp) exists."""
    crop = model.input_shape[1:3]
    largest = max((math.prod(layer.output.shape[1:]) * (2 if "16" in str(layer.output.dtype) else 4)
                   for layer in model.layers if None not in tuple(layer.output.shape[1:])), default=0)
    return crop[0] * crop[1] * 3 * 4 + largest


def check_batch_memory(batch_size, per_tile, memory=None):
    """Refuses a tile batch that cannot fit in memory, before any work.

    A device step holds every tile of its batch (a last partial batch is padded to it): batch_size ·
    `per_tile` (`tile_bytes`, a lower bound) that exceeds the memory could never run, and past the
    memory the kernel kills the process with no message.

    Raises:
      UserError: naming --batch_size, the bytes needed and the largest batch that could fit.
    """
    usable = usable_memory() if memory is None else Memory(memory, "this machine has")
    if usable is None or per_tile <= 0:
        return
    if batch_size * per_tile > usable.bytes:
        raise UserError(f"--batch_size={batch_size}: a device step holds every tile of a batch, at least "
                        f"{_gigabytes(batch_size * per_tile)} for this network (each tile's input and its "
                        f"largest layer output); {usable.source} {_gigabytes(usable.bytes)}: use at most "
                        f"{usable.bytes // per_tile} (fewer leaves room for the rest)")


def _gigabytes(count):
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.1f} MiB"


def settings_for(model, scales=(1.0,), flip=True, crop_size=None, base_size=None,
                 batch_size=DEFAULT_BATCH_SIZE, compiled=None):
    """ProtocolSettings with crop, base size and mean taken from `model.psp_config` by default.

    `compiled` None: XLA where a GPU or TPU is visible (distribute.accelerator_visible).

    Raises:
      UserError: bad scales, batch size, base size, or a crop that differs from the model's input.
    """
    if not isinstance(model, PSPNet):
        raise UserError(f"model {model.name!r} is not a PSPNet (build it with psp_tf.build_pspnet)")
    config = model.psp_config
    model_crop = tuple(int(v) for v in model.input_shape[1:3])
    crop = model_crop if crop_size is None else size_pair(crop_size)
    if crop != model_crop:
        raise UserError(f"crop_size {crop[0]}x{crop[1]} differs from the model's input "
                        f"{model_crop[0]}x{model_crop[1]}; load the model with that input size")
    base = config.base_size if base_size is None else int(base_size)
    if base < 1 or int(batch_size) < 1:
        raise UserError(f"base_size={base} and batch_size={batch_size} must be positive")
    scales = parse_scales(scales, base, config.num_classes)
    check_batch_memory(int(batch_size), tile_bytes(model))
    if compiled is None:
        compiled = accelerator_visible()
    return ProtocolSettings(scales, bool(flip), crop, base, tuple(config.mean), int(batch_size), bool(compiled))


def scale_scores(model, images, settings, scale):
    """One scale of scale_process.m for a group of images: the blended score maps at the scaled sizes.

    The tiles of all images go through the network together, `batch_size` inputs at a time (a tile
    and its mirror image always share a batch, flip merged in logit space), and each tile's
    probabilities are added into its image's sums as soon as its batch is done, so the tiles of a
    scale are never held together.

    Args:
      model, images, settings: as protocol_graph.
      scale: Python float.

    Returns:
      list of float32 [h_i, w_i, K] (h_i, w_i: the image resized to base_size·scale + 1).
    """
    long_side = settings.base_size * scale + 1  # eval_sub.m: long_size = base_size*s + 1
    tiles, layouts = [], []
    for image in images:
        new_h, new_w = scaled_size(tf.shape(image)[0], tf.shape(image)[1], long_side)
        t, layout = make_tiles(imresize(image, new_h, new_w), settings.crop_size, settings.mean)
        tiles.append(t)
        layouts.append(layout)
    counts = [tf.shape(t)[0] for t in tiles]
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    tiles = tf.concat(tiles, axis=0)
    per_batch = max(1, settings.batch_size // 2) if settings.flip else settings.batch_size
    network = network_function(model)
    crop_h, crop_w = settings.crop_size
    states = [blend_start(layout, crop_h, model.psp_config.num_classes) for layout in layouts]

    def body(i, states):
        x = tiles[i * per_batch: (i + 1) * per_batch]
        if settings.flip:
            x = tf.reshape(tf.stack([x, tf.reverse(x, axis=[2])], axis=1),
                           tf.concat([[-1], tf.shape(x)[1:]], axis=0))
        probs = merge_flip(network(x), settings.flip)
        for k in range(per_batch):  # route each tile of the batch to its image's sums
            states = [_add_if_mine(state, probs, k, i * per_batch + k - offset, count, layout)
                      for state, offset, count, layout in zip(states, offsets, counts, layouts)]
        return i + 1, states

    steps = (tf.shape(tiles)[0] + per_batch - 1) // per_batch
    # parallel_iterations=1: batches run one after another, so only one batch's activations are live.
    _, states = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), states),
                              parallel_iterations=1)
    return [blend_finish(state, layout, crop_h, crop_w) for state, layout in zip(states, layouts)]


def _add_if_mine(state, probs, k, t, count, layout):
    """blend_add of batch row k when it is tile t of this image (0 <= t < count), else the state."""
    return tf.cond(tf.logical_and(t >= 0, t < count),
                   lambda: blend_add(state, probs[k], t, layout), lambda: state)


def protocol_graph(model, images, settings, probabilities=True):
    """The full protocol for a group of images, as TensorFlow ops (tiles of a scale batched across images).

    Scales, then images, run one after another (control dependencies), so the memory is that of one
    scale's network batches and sums plus the small per-scale score maps, never several at once.

    Args:
      model: Keras model, float32 [B, crop_h, crop_w, 3] RGB 0..255 -> logits [B, crop_h, crop_w, K].
      images: list of uint8 [H_i, W_i, 3] tensors.
      settings: ProtocolSettings.
      probabilities: also return the full-size probabilities ([H_i, W_i, K] float32 each); without
        them the memory no longer grows with K times the image size.

    Returns:
      list of (labels int32 [H_i, W_i], probabilities float32 [H_i, W_i, K] or None).
    """
    per_scale, previous = [], []
    for scale in settings.scales:
        with tf.control_dependencies(previous):
            per_scale.append(scale_scores(model, [tf.identity(im) for im in images], settings, scale))
        previous = per_scale[-1]
    results = []
    for i, image in enumerate(images):
        with tf.control_dependencies(previous):
            result = full_size_result([maps[i] for maps in per_scale], tf.shape(image)[0],
                                      tf.shape(image)[1], model.psp_config.num_classes, probabilities)
        results.append(result)
        previous = [result[0]]
    return results


_ENGINES = weakref.WeakKeyDictionary()
_NETWORKS = weakref.WeakKeyDictionary()


def network_function(model):
    """The model as a tf.function traced once for any batch size (the in-graph protocol's network)."""
    if model not in _NETWORKS:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        # No autograph: the network has no Python control flow on tensors, and converting it slows the trace.
        _NETWORKS[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return _NETWORKS[model]


def engine(model, settings, probabilities=True):
    """The cached stream.Engine of `model` under the current strategy (one compiled step per settings)."""
    cache = _ENGINES.setdefault(model, {})
    key = (settings, bool(probabilities), full_size.STRIP_BYTES)
    if key not in cache:
        cache[key] = stream.Engine(model, settings, probabilities=probabilities)
    return cache[key]


def predict(model, images, scales=(1.0,), flip=True, crop_size=None, base_size=None,
            batch_size=DEFAULT_BATCH_SIZE, precision=None, probabilities=True, compiled=None):
    """Segments images with the author's protocol; the tiles of all images share network batches.

    Args:
      model: a PSPNet from psp_tf.build_pspnet / psp_tf.model_dir.load_model.
      images: one uint8 RGB [H, W, 3] (or grey [H, W] / [H, W, 1], or RGBA) array or tensor, or a list
        of them (any sizes).
      scales: scale factors (or 'ms'); flip: add the mirrored pass (the author always does).
      crop_size, base_size: default to the model's config.
      batch_size: network inputs per forward pass.
      precision: None (the model's own) or 'float32' / 'bfloat16': rebuilds the network in that
        compute precision with the same weights (logits stay float32).
      probabilities: also return the full-size probabilities. False gives the same labels without
        ever holding an [H, W, K] map (4000x3000 with K = 150 is 7.2 GB per map).
      compiled: run the network step with XLA (jit_compile); False runs it as a plain tf.function;
        None (default): XLA where a GPU or TPU is visible.

    Returns:
      Prediction(labels int32 [H, W] train ids, probabilities float32 [H, W, K] or None), or a list
      of them when `images` is a list.

    Raises:
      UserError: bad settings or image.
    """
    if precision is not None:
        model = with_precision(model, precision)
    settings = settings_for(model, scales, flip, crop_size, base_size, batch_size, compiled)
    several = isinstance(images, (list, tuple))
    arrays = [_checked_image(im) for im in (images if several else [images])]
    results = [Prediction(labels, probs) for _, labels, probs in
               engine(model, settings, probabilities).run(enumerate(arrays))]
    return results if several else results[0]


def _checked_image(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1 or (
            image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise UserError(f"image must be uint8 [H, W] or [H, W, 1|3|4], got {image.dtype} {image.shape}")
    return image


def model_precision(model):
    """'float32' or 'bfloat16' / 'float16': the compute dtype of the model's convolutions."""
    for layer in model.layers:
        if layer.weights and layer.dtype_policy.compute_dtype != "float32":
            return layer.dtype_policy.compute_dtype
    return "float32"


def with_precision(model, precision):
    """The same network and weights in another compute precision (the model itself if it matches)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision={precision!r} is not one of {sorted(PRECISIONS)}")
    if model_precision(model) == precision:
        return model
    clone = build_pspnet(model.psp_config, precision=precision)
    clone.set_weights(model.get_weights())
    return clone
