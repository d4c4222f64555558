"""The author's test-time protocol end to end: scales, resize, sliding window, flip, blending, argmax.

Source: evaluation/eval_sub.m and scale_process.m (shared caffe_reference.md §3.2-3.5). Everything
from the uint8 image to the label map is one TensorFlow graph (`protocol_graph`), so the same code
serves `predict`, the distributed evaluator and the exported SavedModel.
"""

import collections
import dataclasses
import math
import os
import weakref
from typing import Tuple

import numpy as np
import tensorflow as tf

from psp_tf.errors import UserError
from psp_tf.evaluation.resize import imresize, scaled_size
from psp_tf.evaluation.sliding_window import blend, make_tiles, merge_flip

# eval_all.m: "set to [0.5 0.75 1 1.25 1.5 1.75] for multi-scale testing".
MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
DEFAULT_BATCH_SIZE = 2

Prediction = collections.namedtuple("Prediction", "labels probabilities")


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """Test-time settings. `batch_size` counts network inputs per forward pass (a tile and its mirror
    image are two); the results do not depend on it beyond float rounding."""

    scales: Tuple[float, ...] = (1.0,)
    flip: bool = True
    crop_size: Tuple[int, int] = (473, 473)
    base_size: int = 512
    mean: Tuple[float, float, float] = (123.68, 116.779, 103.939)
    batch_size: int = DEFAULT_BATCH_SIZE


def parse_scales(text, base_size=None, num_classes=None):
    """'1.0' | 'ms' | '0.5,1.0,1.5' -> tuple of positive floats.

    With `base_size` and `num_classes` (a model's), also refuses a scale whose work cannot fit in
    this machine's memory (`check_scale_memory`).

    Raises:
      UserError: not numbers, a scale <= 0, or a scale too large for the memory.
    """
    if isinstance(text, (tuple, list)):
        values = [float(v) for v in text]
    elif str(text).strip().lower() == "ms":
        values = list(MULTI_SCALES)
    else:
        try:
            values = [float(v) for v in str(text).replace(" ", "").split(",") if v]
        except ValueError:
            raise UserError(f"--scales={text!r}: expected 'ms' or comma-separated numbers") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise UserError(f"--scales={text!r}: every scale must be a number > 0")
    if base_size is not None and num_classes is not None:
        check_scale_memory(values, base_size, num_classes)
    return tuple(values)


def physical_memory():
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_scale_memory(scales, base_size, num_classes, memory=None):
    """Refuses a scale whose class-score map cannot fit in memory, before any work starts.

    eval_sub.m resizes the image to a long side of base_size·s + 1 whatever its size, and the protocol
    holds, per pixel at that size, the image resized in float64 (3 × 8 bytes, MATLAB's imresize) and
    later float32 scores of every class (K × 4 bytes, blended tiles before the resize back): for a
    square image at least L² · max(24, 4K) bytes. Far past the memory that ends in a ResourceExhausted
    traceback minutes later (e.g. --scales 1000).

    Raises:
      UserError: naming --scales, the scaled size, the bytes needed and the largest scale that fits.
    """
    memory = physical_memory() if memory is None else memory
    if not memory:
        return
    per_pixel = max(3 * 8, 4 * num_classes)
    for scale in scales:
        side = math.ceil(base_size * scale + 1)
        need = side * side * per_pixel
        if need > memory:
            largest = (math.sqrt(memory / per_pixel) - 1) / base_size
            raise UserError(
                f"--scales: scale {scale:g} resizes images to a long side of {side} px, where the "
                f"protocol's buffers ({num_classes} float32 class scores per pixel) need "
                f"{_gigabytes(need)} for a square image; this machine has {_gigabytes(memory)} "
                f"(the largest scale that fits is {largest:.3g})")


def _gigabytes(count):
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.1f} MiB"


def settings_for(model, scales=(1.0,), flip=True, crop_size=None, base_size=None,
                 batch_size=DEFAULT_BATCH_SIZE):
    """ProtocolSettings with crop, base size and mean taken from `model.psp_config` by default.

    Raises:
      UserError: bad scales, batch size, base size, or a crop that differs from the model's input.
    """
    config = getattr(model, "psp_config", None)
    if config is None:
        raise UserError(f"model {model.name!r} has no psp_config (build it with psp_tf.build_pspnet)")
    model_crop = tuple(int(v) for v in model.input_shape[1:3])
    crop = model_crop if crop_size is None else _pair(crop_size)
    if crop != model_crop:
        raise UserError(f"crop_size {crop[0]}x{crop[1]} differs from the model's input "
                        f"{model_crop[0]}x{model_crop[1]}; load the model with that input size")
    base = config.base_size if base_size is None else int(base_size)
    if base < 1 or int(batch_size) < 1:
        raise UserError(f"base_size={base} and batch_size={batch_size} must be positive")
    scales = parse_scales(scales, base, config.num_classes)
    return ProtocolSettings(scales, bool(flip), crop, base, tuple(config.mean), int(batch_size))


def _pair(value):
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


def as_rgb(image):
    """uint8 [H, W, C] (C = 1, 3 or 4) -> [H, W, 3]: grey replicated (as eval_sub.m), alpha dropped."""
    image = tf.convert_to_tensor(image, tf.uint8)
    if image.shape.rank == 2:
        image = image[..., None]
    return tf.cond(tf.shape(image)[2] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3])


def run_network(model, tiles, flip, batch_size):
    """Per-tile probabilities for tiles [n, h, w, 3] float32, in batches, flip merged in logit space.

    A tile and its mirror image always share a batch, so the flip merge happens per batch and only
    probabilities (never the doubled logits) are kept.

    Returns:
      float32 [n, h, w, K].
    """
    per_batch = max(1, batch_size // 2) if flip else batch_size
    network = network_function(model)
    n = tf.shape(tiles)[0]
    steps = (n + per_batch - 1) // per_batch
    out = tf.TensorArray(tf.float32, size=steps, infer_shape=False)

    def body(i, out):
        x = tiles[i * per_batch: (i + 1) * per_batch]
        if flip:
            x = tf.reshape(tf.stack([x, tf.reverse(x, axis=[2])], axis=1),
                           tf.concat([[-1], tf.shape(x)[1:]], axis=0))
        return i + 1, out.write(i, merge_flip(network(x), flip))

    _, out = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), out))
    return out.concat()


def protocol_graph(model, images, settings):
    """The full protocol for a group of images, as TensorFlow ops (tiles of a scale batched across images).

    Args:
      model: Keras model, float32 [B, crop_h, crop_w, 3] RGB 0..255 -> logits [B, crop_h, crop_w, K].
      images: list of uint8 [H_i, W_i, 3] tensors.
      settings: ProtocolSettings.

    Returns:
      list of (labels int32 [H_i, W_i], probabilities float32 [H_i, W_i, K]).
    """
    sums = [None] * len(images)
    for scale in settings.scales:
        long_side = settings.base_size * scale + 1  # eval_sub.m: long_size = base_size*s + 1
        tiles, layouts = [], []
        for image in images:
            new_h, new_w = scaled_size(tf.shape(image)[0], tf.shape(image)[1], long_side)
            t, layout = make_tiles(imresize(image, new_h, new_w), settings.crop_size, settings.mean)
            tiles.append(t)
            layouts.append(layout)
        counts = [tf.shape(t)[0] for t in tiles]
        probs = run_network(model, tf.concat(tiles, axis=0), settings.flip, settings.batch_size)
        for i, (part, layout) in enumerate(zip(tf.split(probs, counts), layouts)):
            score = blend(part, layout)
            score = imresize(score, tf.shape(images[i])[0], tf.shape(images[i])[1])
            # scale_process.m renormalises after the resize: bsxfun(@rdivide, data, sum(data, 3)).
            score = score / tf.reduce_sum(score, axis=-1, keepdims=True)
            sums[i] = score if sums[i] is None else sums[i] + score
    results = []
    for total in sums:
        probs = total / float(len(settings.scales))
        results.append((tf.argmax(probs, axis=-1, output_type=tf.int32), probs))
    return results


_FUNCTIONS = weakref.WeakKeyDictionary()
_NETWORKS = weakref.WeakKeyDictionary()


def network_function(model):
    """The model as a tf.function traced once for any batch size: every scale, image group and
    replica reuses one traced network instead of re-tracing the Keras graph each time."""
    if model not in _NETWORKS:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        _NETWORKS[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return _NETWORKS[model]


def predict_function(model, settings, num_images=1):
    """A cached tf.function: `num_images` uint8 [H, W, C] images of any size -> [(labels, probs)]."""
    cache = _FUNCTIONS.setdefault(model, {})
    key = (settings, num_images)
    if key not in cache:
        spec = [tf.TensorSpec([None, None, None], tf.uint8)] * num_images

        @tf.function(input_signature=spec, reduce_retracing=True)
        def fn(*images):
            return protocol_graph(model, [as_rgb(im) for im in images], settings)

        cache[key] = fn
    return cache[key]


def predict(model, image, scales=(1.0,), flip=True, crop_size=None, base_size=None,
            batch_size=DEFAULT_BATCH_SIZE, precision=None):
    """Segments one image with the author's protocol.

    Args:
      model: a PSPNet from psp_tf.build_pspnet / psp_tf.load.load_model.
      image: uint8 RGB [H, W, 3] (or grey [H, W] / [H, W, 1]) array or tensor.
      scales: scale factors (or 'ms'); flip: add the mirrored pass (the author always does).
      crop_size, base_size: default to the model's config.
      batch_size: network inputs per forward pass.
      precision: None (the model's own) or 'float32' / 'bfloat16': rebuilds the network in that
        compute precision with the same weights (logits stay float32).

    Returns:
      Prediction(labels int32 [H, W] train ids, probabilities float32 [H, W, K]).

    Raises:
      UserError: bad settings or image.
    """
    if precision is not None:
        model = with_precision(model, precision)
    settings = settings_for(model, scales, flip, crop_size, base_size, batch_size)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1 or (
            image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise UserError(f"image must be uint8 [H, W] or [H, W, 1|3|4], got {image.dtype} {image.shape}")
    if image.ndim == 2:
        image = image[..., None]
    labels, probs = predict_function(model, settings)(tf.constant(image))[0]
    return Prediction(labels.numpy(), probs.numpy())


def model_precision(model):
    """'float32' or 'bfloat16' / 'float16': the compute dtype of the model's convolutions."""
    for layer in model.layers:
        if layer.weights and layer.dtype_policy.compute_dtype != "float32":
            return layer.dtype_policy.compute_dtype
    return "float32"


def with_precision(model, precision):
    """The same network and weights in another compute precision (the model itself if it matches)."""
    from psp_tf.model import PRECISIONS, build_pspnet  # lazily: the model module is heavy

    if precision not in PRECISIONS:
        raise UserError(f"--precision={precision!r} is not one of {sorted(PRECISIONS)}")
    if model_precision(model) == precision:
        return model
    clone = build_pspnet(model.psp_config, precision=precision)
    clone.set_weights(model.get_weights())
    return clone


def _scales_argument(text):
    """argparse `type=` for --scales: parse_scales, its UserError as argparse's one-line error."""
    import argparse

    try:
        return parse_scales(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def add_protocol_arguments(parser):
    """The command-line options shared by `python -m psp_tf.predict` and `python -m psp_tf.export`."""
    from psp_tf import checks

    parser.add_argument("--weights", required=True, help="psp_tf weights directory (convert/train.py output)")
    parser.add_argument("--scales", type=_scales_argument, default="1.0", help="1.0 | ms | comma-separated scales")
    parser.add_argument("--noflip", action="store_true", help="skip the mirrored pass")
    parser.add_argument("--batch_size", type=checks.arg_type(checks.POSITIVE_INT), default=DEFAULT_BATCH_SIZE,
                        help="network inputs per forward pass")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
