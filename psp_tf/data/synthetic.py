"""A built-in synthetic segmentation dataset: textured shapes on a smooth background, no files.

Four classes: background, striped ellipses, checkered rectangles, dotted triangles. Every instance
draws its own two colours, so only shape and texture tell the classes apart: a network must learn
spatial structure, not a colour look-up. Generated in TF ops from a stateless seed keyed on
(seed, split, index), so `read(i)` (eager) and the training pipeline (in graph) give the same arrays.
"""

import math

import tensorflow as tf

from psp_tf.data import base
from psp_tf.data.options import SyntheticOptions

CLASS_NAMES = ("background", "striped ellipse", "checkered rectangle", "dotted triangle")
PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200))
SPLITS = {"train": (1, 2000), "val": (2, 200)}  # split -> (seed stream, default number of images)
HEIGHT_RANGE = (160, 200)
WIDTH_RANGE = (160, 240)
MAX_SHAPES = 5


def _uniform(seed, shape=(), low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _background(seed, x, y, h, w):
    """A smooth gradient between two random colours along a random direction. float32 [H, W, 3]."""
    s = tf.random.experimental.stateless_split(seed, 3)
    c0, c1 = _uniform(s[0], [3], 0.0, 255.0), _uniform(s[1], [3], 0.0, 255.0)
    angle = _uniform(s[2], [], 0.0, 2 * math.pi)
    t = (x * tf.cos(angle) + y * tf.sin(angle)) / tf.cast(tf.maximum(h, w), tf.float32)
    t = (t - tf.reduce_min(t)) / (tf.reduce_max(t) - tf.reduce_min(t) + 1e-6)
    return c0 + (c1 - c0) * t[..., None]


def _striped_ellipse(u, v, radius, aspect, period):
    mask = (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    return mask, tf.sin(2 * math.pi * u / period) > 0


def _checkered_rectangle(u, v, radius, aspect, period):
    mask = (tf.abs(u) <= 0.9 * radius) & (tf.abs(v) <= 0.9 * radius * aspect)
    return mask, tf.math.floormod(tf.floor(u / period) + tf.floor(v / period), 2.0) > 0.5


def _dotted_triangle(u, v, radius, period):
    # An equilateral triangle: three half-planes at distance radius / 2 from the centre.
    mask = tf.ones_like(u, tf.bool)
    for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
        mask &= u * math.cos(a) + v * math.sin(a) <= radius / 2
    du, dv = tf.math.floormod(u, period) - period / 2, tf.math.floormod(v, period) - period / 2
    return mask, du ** 2 + dv ** 2 < (0.3 * period) ** 2


def _shape(seed, x, y, h, w):
    """One random shape instance: (mask bool [H, W], texture float32 [H, W, 3], class id int32)."""
    s = tf.random.experimental.stateless_split(seed, 3)
    p = _uniform(s[0], [8])
    cls = 1 + tf.minimum(tf.cast(p[0] * 3, tf.int32), 2)
    cx, cy = p[1] * tf.cast(w, tf.float32), p[2] * tf.cast(h, tf.float32)
    radius, angle, aspect = 22.0 + 34.0 * p[3], 2 * math.pi * p[4], 0.55 + 0.45 * p[5]
    period = 6.0 + 6.0 * p[6]
    u = (x - cx) * tf.cos(angle) + (y - cy) * tf.sin(angle)
    v = -(x - cx) * tf.sin(angle) + (y - cy) * tf.cos(angle)
    # Only the drawn class's mask and texture are computed (switch_case), to keep generation cheap.
    mask, pattern = tf.switch_case(cls - 1, [lambda: _striped_ellipse(u, v, radius, aspect, period),
                                             lambda: _checkered_rectangle(u, v, radius, aspect, period),
                                             lambda: _dotted_triangle(u, v, radius, period)])
    colour_a = _uniform(s[1], [3], 0.0, 255.0)
    # The second colour differs by at least 64 levels per channel, so the texture is always visible.
    colour_b = tf.math.floormod(colour_a + _uniform(s[2], [3], 64.0, 192.0), 256.0)
    texture = tf.where(pattern[..., None], colour_a, colour_b)
    return mask, texture, cls


def _paint(seed, x, y, h, w, image, label):
    """Draws one shape over (image, label)."""
    mask, texture, cls = _shape(seed, x, y, h, w)
    return tf.where(mask[..., None], texture, image), tf.where(mask, cls, label)


def generate(seed):
    """Generates one scene.

    Args:
      seed: int32/int64 [2] stateless seed.
    Returns:
      (image uint8 [H, W, 3], label uint8 [H, W]) with H in 160..200, W in 160..240, labels 0..3.
    """
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4 + MAX_SHAPES)
    h = tf.random.stateless_uniform([], s[0], HEIGHT_RANGE[0], HEIGHT_RANGE[1] + 1, tf.int32)
    w = tf.random.stateless_uniform([], s[1], WIDTH_RANGE[0], WIDTH_RANGE[1] + 1, tf.int32)
    y, x = tf.meshgrid(tf.range(tf.cast(h, tf.float32)), tf.range(tf.cast(w, tf.float32)), indexing="ij")
    image = _background(s[2], x, y, h, w)
    label = tf.zeros([h, w], tf.int32)
    count = tf.random.stateless_uniform([], s[3], 2, MAX_SHAPES + 1, tf.int32)
    for k in range(MAX_SHAPES):
        image, label = tf.cond(k < count, lambda k=k, im=image, lb=label: _paint(s[4 + k], x, y, h, w, im, lb),
                               lambda im=image, lb=label: (im, lb))
    image += 6.0 * tf.random.stateless_normal(tf.shape(image), s[3])
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return image, tf.cast(label, tf.uint8)


_generate_plain = tf.autograph.experimental.do_not_convert(generate)


@tf.function
def _read_one(seed):
    """One scene generated inside a tf.data map, exactly as the pipelines generate it.

    Eager and tf.function execution round a few float pixels differently (1e-5 of them) from
    tf.data map functions, and read(i) must equal the pipelines' arrays.
    """
    return tf.data.Dataset.from_tensors(seed).map(_generate_plain).get_single_element()


class SyntheticDataset(base.Dataset):
    """The synthetic split: `examples` holds pseudo paths (no files exist)."""

    def __init__(self, split, num_images, seed):
        stream, _ = SPLITS[split]
        names = [f"synthetic/{split}/{i:05d}.png" for i in range(num_images)]
        super().__init__("synthetic", split, [(n, n) for n in names], len(CLASS_NAMES), CLASS_NAMES,
                         PALETTE, where="synthetic")
        self.key = (int(seed), stream)

    def example_seed(self, index):
        """int64 [2] stateless seed of example `index` (graph-safe)."""
        # Cast: the result's dtype (and so every random draw) follows the dtype of `index`.
        return tf.random.experimental.stateless_fold_in(tf.constant(self.key, tf.int64),
                                                        tf.cast(index, tf.int64))

    def read(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"synthetic {self.split} has {len(self)} images, not index {i}")
        image, label = _read_one(self.example_seed(i))
        return image.numpy(), label.numpy()

    def image_bytes(self, i, image):
        """No file holds the scene: a lossless PNG of its pixels."""
        return tf.io.encode_png(image).numpy()

    def _tf_loader(self):
        return lambda index: generate(self.example_seed(index))


def open_synthetic(data_dir, split, options=SyntheticOptions()):
    """Opens the synthetic dataset (data_dir is ignored; pass None).

    Args:
      split: 'train' or 'val' (different image streams).
      options: SyntheticOptions: num_images (split size, default 2000 train, 200 val) and seed (the
        same seed gives the same images).
    """
    del data_dir
    if split not in SPLITS:
        raise base.UserError(f"synthetic has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    num_images = SPLITS[split][1] if options.num_images is None else options.num_images
    return SyntheticDataset(split, int(num_images), int(options.seed))
