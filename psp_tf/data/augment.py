"""The paper's training augmentations as one composed geometric transform per tensor, in TF ops.

PSPNet (Zhao et al. 2017, section 5.1) trains with random scale 0.5-2.0, random rotation
-10..10 degrees, Gaussian blur and mirror, then pads with the mean colour / 255 and crops (as the
author's Caffe data layer and the semseg reference: resize, rotate, blur, flip, pad, crop). Instead of
resizing and rotating the whole (up to 2x enlarged) image to keep one crop, scale . rotation . flip .
pad . crop offset are composed into one affine map that is sampled only at the crop's pixels
(docs/performance.md: ~4x faster than the step-by-step TF sequence).
"""

import math

import tensorflow as tf

from psp_tf.data.config import BLUR_KERNEL, BLUR_SIZE, AugmentConfig
from psp_tf.data.decode import IGNORE_LABEL

# AugmentConfig is declared in the light psp_tf.data.config (train_config.json holds it); the blur's
# kernel lives beside it, since the check tool's --crop minimum follows from its size.
__all__ = ["AugmentConfig", "BLUR_KERNEL", "BLUR_SIZE", "augment_example", "gaussian_blur"]


def _matmul(*mats):
    out = mats[0]
    for m in mats[1:]:
        out = tf.linalg.matmul(out, m)
    return out


def _affine(a, b, c, d, e, f):
    """3x3 matrix [[a, b, c], [d, e, f], [0, 0, 1]] from float32 scalars."""
    zero, one = tf.constant(0.0), tf.constant(1.0)
    return tf.reshape(tf.stack([a, b, c, d, e, f, zero, zero, one]), [3, 3])


def sample_params(seed, image_size, crop_size, config):
    """Draws one example's augmentation parameters.

    Args:
      seed: int64 [2] stateless seed.
      image_size: int32 [2] (H, W) of the source image.
      crop_size: (h, w) python ints.
      config: AugmentConfig.
    Returns:
      dict of scalar tensors: scale, angle (radians), flip (bool), blur (bool), offset (int32 [2] y, x),
      scaled (int32 [2] H1, W1), pad (int32 [2] top, left).
    """
    s = tf.random.experimental.stateless_split(seed, 6)
    low, high = config.scale_range or (1.0, 1.0)
    scale = tf.random.stateless_uniform([], s[0], low, high)
    angle = tf.random.stateless_uniform([], s[1], -1.0, 1.0) * config.max_rotation * math.pi / 180
    flip = config.mirror & (tf.random.stateless_uniform([], s[2]) < 0.5)
    blur = tf.random.stateless_uniform([], s[3]) < config.blur_prob
    scaled = tf.maximum(tf.cast(tf.round(tf.cast(image_size, tf.float32) * scale), tf.int32), 1)
    canvas = tf.maximum(scaled, crop_size)
    pad = (canvas - scaled) // 2
    room = canvas - crop_size + 1
    if config.random_crop:
        offset = tf.random.stateless_uniform([2], s[4], 0, tf.int32.max, tf.int32) % room
    else:
        offset = (room - 1) // 2
    return dict(scale=scale, angle=angle, flip=flip, blur=blur, offset=offset, scaled=scaled, pad=pad)


def output_to_input(params, image_size):
    """The 3x3 affine map from crop pixel (x, y, 1) to source pixel coordinates (pixel centres at ints).

    Inverse of: resize to `scaled` (half-pixel centres, as cv2.resize), rotate about the scaled
    image's centre, mirror, pad, crop. Returns float32 [3, 3].
    """
    f = lambda t: tf.cast(t, tf.float32)  # noqa: E731
    h1, w1 = f(params["scaled"][0]), f(params["scaled"][1])
    sy, sx = h1 / f(image_size[0]), w1 / f(image_size[1])
    dy, dx = f(params["offset"][0] - params["pad"][0]), f(params["offset"][1] - params["pad"][1])
    zero, one = tf.constant(0.0), tf.constant(1.0)
    shift = _affine(one, zero, dx, zero, one, dy)
    sign = tf.where(params["flip"], -1.0, 1.0)
    mirror = _affine(sign, zero, tf.where(params["flip"], w1 - 1, 0.0), zero, one, zero)
    cy, cx = (h1 - 1) / 2, (w1 - 1) / 2
    cos, sin = tf.cos(params["angle"]), tf.sin(params["angle"])
    rotate = _matmul(_affine(one, zero, cx, zero, one, cy), _affine(cos, -sin, zero, sin, cos, zero),
                     _affine(one, zero, -cx, zero, one, -cy))
    unscale = _affine(1 / sx, zero, 0.5 / sx - 0.5, zero, 1 / sy, 0.5 / sy - 0.5)
    return _matmul(unscale, rotate, mirror, shift)


def _warp(tensor, matrix, crop_size, interpolation):
    """ImageProjectiveTransformV3 of one [H, W, C] tensor onto the crop grid; edges replicate."""
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tensor[None], transforms=tf.reshape(matrix, [-1])[None, :8],
        output_shape=tf.constant(crop_size, tf.int32), fill_value=tf.constant(0.0),
        interpolation=interpolation, fill_mode="NEAREST")
    return out[0]


def _bucket_pixels(n):
    """Flattened source length padded up to 4 sizes per octave (<= 25% padding, few XLA compiles)."""
    octave = tf.cast(tf.math.floor(tf.math.log(tf.cast(n, tf.float32)) / math.log(2.0)), tf.int32)
    step = tf.bitwise.left_shift(1, tf.maximum(octave - 2, 0))
    return (n + step - 1) // step * step


# Why XLA: the bilinear ImageProjectiveTransformV3 of the float image (~11-13 ms/img single-threaded,
# 512x683 source, 473 crop) plus the separate mask / where / cast ops made the tf.data pipeline slower
# than a one-process OpenCV loop (83.6 vs 109 img/s, 23.6 CPU-ms/img, 2 cores). The same sampling fused
# by XLA (coordinates, clamp, 4 uint8 gathers, lerp, mask, mean fill in one kernel) takes ~3 ms:
# augment_example fell from ~20 to ~9 ms, the pipeline rose to 123-132 img/s at ~15 CPU-ms/img (OpenCV
# loop 93-102 img/s in the same runs). A plain-op 4-gather bilinear was slower (16.6 ms). XLA needs
# static shapes, so the source is flattened and padded to a bucketed length (_bucket_pixels): one compile
# (~0.2-0.3 s) per bucket, not per image size. The label keeps ImageProjectiveTransformV3 NEAREST (cheap,
# ~2.7 ms, and its exact rounding); the image matches the old op to float rounding (<0.03 of 255).
@tf.function(jit_compile=True)
def _sample_image(flat, size, matrix, d, last, mean, crop):
    """Bilinear, edge-clamped sample of flat uint8 [N, 3] (row-major [H, W] = size) at the crop grid.

    Same arithmetic as ImageProjectiveTransformV3 BILINEAR, fill_mode NEAREST; pixels outside the
    canvas or the source get `mean`. Returns (float32 [h, w, 3], bool [h, w] valid).
    """
    yo = tf.range(crop[0], dtype=tf.float32)[:, None]
    xo = tf.range(crop[1], dtype=tf.float32)[None, :]
    x_in = matrix[0, 0] * xo + matrix[0, 1] * yo + matrix[0, 2]
    y_in = matrix[1, 0] * xo + matrix[1, 1] * yo + matrix[1, 2]
    fsize = tf.cast(size, tf.float32)
    # The rotation keeps the scaled image's canvas: what turns out of it is cut off, as cv2.warpAffine.
    # The canvas is axis-aligned in the crop, so its mask is a row mask times a column mask.
    in_canvas = ((yo + d[0] >= 0) & (yo + d[0] <= last[0])) & ((xo + d[1] >= 0) & (xo + d[1] <= last[1]))
    xm = matrix[0, 0] * xo + (matrix[0, 1] * yo + matrix[0, 2])  # the mask's own (historic) rounding
    ym = matrix[1, 0] * xo + (matrix[1, 1] * yo + matrix[1, 2])
    inside = (tf.abs(xm - (fsize[1] - 1) / 2) <= fsize[1] / 2) & (tf.abs(ym - (fsize[0] - 1) / 2) <= fsize[0] / 2)
    valid = in_canvas & inside
    x = tf.clip_by_value(x_in, 0.0, fsize[1] - 1)
    y = tf.clip_by_value(y_in, 0.0, fsize[0] - 1)
    x0, y0 = tf.floor(x), tf.floor(y)
    xi0, yi0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    xi1, yi1 = tf.minimum(xi0 + 1, size[1] - 1), tf.minimum(yi0 + 1, size[0] - 1)
    r0, r1 = yi0 * size[1], yi1 * size[1]
    wx0, wx1 = ((x0 + 1) - x)[..., None], (x - x0)[..., None]
    wy0, wy1 = ((y0 + 1) - y)[..., None], (y - y0)[..., None]
    g = lambda i: tf.cast(tf.gather(flat, i), tf.float32)  # noqa: E731
    top = wx0 * g(r0 + xi0) + wx1 * g(r0 + xi1)
    bottom = wx0 * g(r1 + xi0) + wx1 * g(r1 + xi1)
    out = wy0 * top + wy1 * bottom
    return tf.where(valid[..., None], out, mean), valid


def gaussian_blur(image):
    """5x5 Gaussian blur with reflect-101 borders, as cv2.GaussianBlur(img, (5, 5), 0). [h, w, 3] float32."""
    k = tf.constant(BLUR_KERNEL, tf.float32)
    r = BLUR_SIZE // 2
    padded = tf.pad(image, [[r, r], [r, r], [0, 0]], mode="REFLECT")[None]
    kx = tf.tile(tf.reshape(k, [1, BLUR_SIZE, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [BLUR_SIZE, 1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "VALID")[0]


def augment_example(image, label, crop_size, seed, config):
    """Applies the training augmentations to one example, sampling only the crop.

    Args:
      image: uint8 [H, W, 3] RGB.
      label: uint8 [H, W] train ids (255 = ignore).
      crop_size: (h, w) python ints.
      seed: int64 [2] stateless seed (the same seed gives the same crop).
      config: AugmentConfig (its mean fills what lies outside the source).
    Returns:
      (image float32 [h, w, 3] RGB 0..255, label uint8 [h, w]); outside the source image the image
      is the mean colour and the label 255.
    """
    crop_size = tuple(int(c) for c in crop_size)
    image_size = tf.shape(image)[:2]
    params = sample_params(seed, image_size, crop_size, config)
    matrix = output_to_input(params, image_size)
    mean = tf.constant(config.mean, tf.float32)
    n = image_size[0] * image_size[1]
    flat = tf.pad(tf.reshape(image, [-1, 3]), [[0, _bucket_pixels(n) - n], [0, 0]])
    out_image, valid = _sample_image(
        flat, image_size, matrix, tf.cast(params["offset"] - params["pad"], tf.float32),
        tf.cast(params["scaled"], tf.float32) - 1, mean, crop_size)
    warped_label = _warp(label[..., None], matrix, crop_size, "NEAREST")[..., 0]
    out_label = tf.where(valid, warped_label, tf.constant(IGNORE_LABEL, tf.uint8))
    if config.blur_prob > 0:
        out_image = tf.cond(params["blur"], lambda: gaussian_blur(out_image), lambda: out_image)
    out_image.set_shape(crop_size + (3,))
    out_label.set_shape(crop_size)
    return out_image, out_label
