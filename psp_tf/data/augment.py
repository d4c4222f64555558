"""The paper's training augmentations as one composed geometric transform per tensor, in TF ops.

PSPNet (Zhao et al. 2017, section 5.1) trains with random scale 0.5-2.0, random rotation
-10..10 degrees, Gaussian blur and mirror, then pads with the mean colour / 255 and crops (as the
author's Caffe data layer and the semseg reference: resize, rotate, blur, flip, pad, crop). Instead of
resizing and rotating the whole (up to 2x enlarged) image to keep one crop, scale . rotation . flip .
pad . crop offset are composed into one affine map that is sampled only at the crop's pixels
(performance_notes.md: ~4x faster than the step-by-step TF sequence).
"""

import dataclasses
import math
from typing import Optional, Tuple

import tensorflow as tf

from psp_tf.data.decode import IGNORE_LABEL

CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
# The reference RandomGaussianBlur is cv2.GaussianBlur(img, (5, 5), 0); for sigma 0 and ksize <= 7
# OpenCV uses its fixed small kernels, for 5 taps the binomial [1, 4, 6, 4, 1] / 16 (not the
# sigma = 1.1 Gaussian its formula would give).
BLUR_KERNEL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
BLUR_SIZE = len(BLUR_KERNEL)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run (defaults: the paper's).

    Attributes:
      scale_range: (low, high) uniform random scale of the image; None = no scaling.
      max_rotation: rotation drawn uniformly in [-max_rotation, max_rotation] degrees; 0 = none.
      blur_prob: probability of a 5x5 Gaussian blur (OpenCV's binomial kernel) of the crop; 0 = never.
      mirror: random horizontal flip with probability 0.5.
      random_crop: random crop offset; False = centre crop (padding is always centred).
      mean: RGB fill colour of padding and rotated-in borders (labels there are 255).
    """

    scale_range: Optional[Tuple[float, float]] = (0.5, 2.0)
    max_rotation: float = 10.0
    blur_prob: float = 0.5
    mirror: bool = True
    random_crop: bool = True
    mean: Tuple[float, float, float] = CAFFE_MEAN_RGB

    @classmethod
    def none(cls, **overrides):
        """No random augmentation: centre crop (with padding) only."""
        base = dict(scale_range=None, max_rotation=0.0, blur_prob=0.0, mirror=False, random_crop=False)
        base.update(overrides)
        return cls(**base)


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


def _valid_mask(matrix, params, image_size, crop_size):
    """bool [h, w]: crop pixels inside the rotated canvas and inside the source image."""
    h, w = crop_size
    yo = tf.range(h, dtype=tf.float32)[:, None]
    xo = tf.range(w, dtype=tf.float32)[None, :]
    d = tf.cast(params["offset"] - params["pad"], tf.float32)
    last = tf.cast(params["scaled"], tf.float32) - 1
    # The rotation keeps the scaled image's canvas: what turns out of it is cut off, as cv2.warpAffine.
    # The canvas is axis-aligned in the crop, so its mask is a row mask times a column mask.
    in_canvas = ((yo + d[0] >= 0) & (yo + d[0] <= last[0])) & ((xo + d[1] >= 0) & (xo + d[1] <= last[1]))
    size = tf.cast(image_size, tf.float32)
    x_in = matrix[0, 0] * xo + (matrix[0, 1] * yo + matrix[0, 2])
    y_in = matrix[1, 0] * xo + (matrix[1, 1] * yo + matrix[1, 2])
    inside = (tf.abs(x_in - (size[1] - 1) / 2) <= size[1] / 2) & (tf.abs(y_in - (size[0] - 1) / 2) <= size[0] / 2)
    return in_canvas & inside


def gaussian_blur(image):
    """5x5 Gaussian blur with reflect-101 borders, as cv2.GaussianBlur(img, (5, 5), 0). [h, w, 3] float32."""
    k = tf.constant(BLUR_KERNEL, tf.float32)
    r = BLUR_SIZE // 2
    padded = tf.pad(image, [[r, r], [r, r], [0, 0]], mode="REFLECT")[None]
    kx = tf.tile(tf.reshape(k, [1, BLUR_SIZE, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [BLUR_SIZE, 1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "VALID")[0]


def augment_example(image, label, crop_size, seed, config=AugmentConfig()):
    """Applies the training augmentations to one example, sampling only the crop.

    Args:
      image: uint8 [H, W, 3] RGB.
      label: uint8 [H, W] train ids (255 = ignore).
      crop_size: (h, w) python ints.
      seed: int64 [2] stateless seed (the same seed gives the same crop).
      config: AugmentConfig.
    Returns:
      (image float32 [h, w, 3] RGB 0..255, label uint8 [h, w]); outside the source image the image
      is the mean colour and the label 255.
    """
    crop_size = tuple(int(c) for c in crop_size)
    image_size = tf.shape(image)[:2]
    params = sample_params(seed, image_size, crop_size, config)
    matrix = output_to_input(params, image_size)
    valid = _valid_mask(matrix, params, image_size, crop_size)
    mean = tf.constant(config.mean, tf.float32)
    warped = _warp(tf.cast(image, tf.float32), matrix, crop_size, "BILINEAR")
    warped_label = _warp(label[..., None], matrix, crop_size, "NEAREST")[..., 0]
    out_image = tf.where(valid[..., None], warped, mean)
    out_label = tf.where(valid, warped_label, tf.constant(IGNORE_LABEL, tf.uint8))
    if config.blur_prob > 0:
        out_image = tf.cond(params["blur"], lambda: gaussian_blur(out_image), lambda: out_image)
    out_image.set_shape(crop_size + (3,))
    out_label.set_shape(crop_size)
    return out_image, out_label
