"""Image and label decoding in TF ops, shared by `Dataset.read` (eagerly) and the tf.data pipelines.

One implementation serves both paths, so `read(i)` and the pipeline give identical arrays
(shared datasets.md: the label traps of each format are handled here and in the look-up tables).
"""

import numpy as np
import tensorflow as tf

from psp_tf import classes

IGNORE_LABEL = classes.IGNORE_LABEL
# Marks a raw label value that the dataset's mapping does not define (never a valid train id).
INVALID = -1

# VOC bit-shift palette for all 256 indices; it is injective, so colours invert to indices.
_VOC_TABLE = np.array([classes.voc_palette_color(i) for i in range(256)], np.int32)


def decode_image(data):
    """Decodes JPEG/PNG/BMP/GIF bytes to RGB.

    Args:
      data: scalar tf.string, the encoded file.
    Returns:
      uint8 [H, W, 3]; greyscale images are replicated to three channels (a few ADE20K JPEGs are grey).
    """
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def voc_palette_index(rgb):
    """Inverts the VOC bit-shift palette.

    OpenCV and `tf.io.decode_png` expand VOC's palette ("P" mode) PNGs to colours, so the class
    indices are recovered from the colours (datasets.md, PASCAL VOC).

    Args:
      rgb: integer [H, W, 3] colours.
    Returns:
      int32 [H, W] palette indices 0..255, INVALID where the colour is not in the VOC palette.
    """
    rgb = tf.cast(rgb, tf.int32)
    index = tf.zeros_like(rgb[..., 0])
    for j in range(8):
        # Index bit j is stored in channel j % 3 at colour bit 7 - j // 3 (classes.voc_palette_color).
        bit = tf.bitwise.bitwise_and(tf.bitwise.right_shift(rgb[..., j % 3], 7 - j // 3), 1)
        index = tf.bitwise.bitwise_or(index, tf.bitwise.left_shift(bit, j))
    back = tf.gather(tf.constant(_VOC_TABLE), index)
    return tf.where(tf.reduce_all(tf.equal(back, rgb), axis=-1), index, INVALID)


def raw_label_values(data):
    """Decodes a label PNG to its raw values: grey PNGs as stored, colour PNGs through the VOC palette.

    Args:
      data: scalar tf.string, an encoded PNG.
    Returns:
      int32 [H, W] raw values (INVALID for colours outside the VOC palette).
    """
    return decode_label(data, tf.range(256, dtype=tf.int32))


def decode_label(data, lut):
    """Decodes a label PNG and maps its raw values to train ids through a 256-entry table.

    Args:
      data: scalar tf.string, an encoded PNG (grey: values as stored; colour: VOC palette).
      lut: int32 [256] train id for each raw value (INVALID where undefined).
    Returns:
      int32 [H, W] train ids, 255 = ignore, INVALID where the raw value has no mapping.
    """
    raw = tf.io.decode_png(data, channels=0, dtype=tf.uint8)
    # Grey PNGs (the common case) index the table directly: one pass, no validity select.
    ids = tf.cond(tf.shape(raw)[2] >= 3,
                  lambda: apply_lut(voc_palette_index(raw[..., :3]), lut),
                  lambda: tf.gather(lut, tf.cast(raw[..., 0], tf.int32)))
    ids.set_shape([None, None])
    return ids


def apply_lut(values, lut):
    """Maps raw label values to train ids through a 256-entry table.

    Args:
      values: int32 [H, W] raw values in 0..255 or INVALID.
      lut: int32 [256] train id for each raw value (INVALID where undefined).
    Returns:
      int32 [H, W] train ids, 255 = ignore, INVALID where the raw value has no mapping.
    """
    mapped = tf.gather(lut, tf.clip_by_value(values, 0, 255))
    return tf.where(values < 0, INVALID, mapped)


def identity_lut(num_classes):
    """Train ids stored as they are: 0..K-1 and 255; every other value is invalid."""
    lut = np.full(256, INVALID, np.int32)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return lut


def checked_label(train_ids, image_shape, path):
    """Asserts (in graph or eagerly) that a label fits its image and holds only valid train ids.

    Args:
      train_ids: int32 [H, W] mapped label, INVALID for values outside the mapping.
      image_shape: int32 [3] shape of the image.
      path: scalar tf.string naming the label file for the error message.
    Returns:
      uint8 [H, W] train ids.
    Raises:
      tf.errors.InvalidArgumentError: size mismatch or an unmapped value (message names the file).
    """
    shape_ok = tf.reduce_all(tf.equal(tf.shape(train_ids), image_shape[:2]))
    values_ok = tf.reduce_all(train_ids >= 0)
    with tf.control_dependencies([
            tf.debugging.Assert(shape_ok, ["label/image size mismatch:", path, tf.shape(train_ids),
                                           image_shape[:2]]),
            tf.debugging.Assert(values_ok, ["label values outside [0, K) and 255 in", path])]):
        return tf.cast(tf.identity(train_ids), tf.uint8)


def encode_label_png(label):
    """Encodes a uint8 [H, W] label as a lossless grey PNG (bytes)."""
    return tf.io.encode_png(tf.convert_to_tensor(label, tf.uint8)[..., None]).numpy()
