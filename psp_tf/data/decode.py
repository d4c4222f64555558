"""The one image and label decoder of every path: training, evaluation, TFRecords, check, predict.

Images decode bit for bit as the author's tools read them: OpenCV's `imread` (the Caffe training data
layer) and MATLAB's `imread` (the evaluation), both libjpeg with its accurate integer DCT and no EXIF
rotation. Labels decode under an explicit expectation per layout (docs/datasets.md), so a label
file of another kind (16-bit, RGB where grey is expected, an alpha channel) is an error naming the
file, never silently reinterpreted. The decoders are TF ops, so `Dataset.read` (eagerly) and the
tf.data pipelines (in graph) run the same code and give identical arrays.
"""

import re

import numpy as np
import tensorflow as tf

from psp_tf import classes
from psp_tf.errors import UserError

IGNORE_LABEL = classes.IGNORE_LABEL
# Marks a raw label value that the dataset's mapping does not define (never a valid train id).
INVALID = -1

# VOC bit-shift palette for all 256 indices; it is injective, so colours invert to indices.
_VOC_TABLE = np.array([classes.voc_palette_color(i) for i in range(256)], np.int32)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Formats TensorFlow cannot decode; only predict reads them, through OpenCV (see image_array).
_OPENCV_ONLY = ((0, b"II*\x00"), (0, b"MM\x00*"), (8, b"WEBP"))


# ---- images ----

def head_bytes(data, n):
    """uint8 [n]: the first n bytes of `data`, zero-padded when it is shorter (graph-safe)."""
    # substr fails past the end of a string, so pad before taking exactly n bytes.
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, n), b"\0" * n]), 0, n)
    return tf.io.decode_raw(head, tf.uint8)


def image_problem(data):
    """What keeps `decode_image` from reading `data` as OpenCV does, '' when nothing (graph-safe).

    TensorFlow's BMP decoder reads only 24- and 32-bit BMPs right: it takes an 8-bit BMP's palette
    indices for grey levels, so such files are refused rather than misread.

    Returns:
      scalar tf.string.
    """
    head = tf.cast(head_bytes(data, 30), tf.int32)
    is_bmp = tf.reduce_all(tf.equal(head[:2], [ord("B"), ord("M")]))
    bits = head[28] + 256 * head[29]
    ok = tf.logical_not(is_bmp) | tf.equal(bits, 24) | tf.equal(bits, 32)
    return tf.where(ok, "", tf.strings.join([tf.strings.as_string(bits), "-bit BMP; only 24- and 32-bit "
                                             "BMPs decode as OpenCV reads them (save it as PNG)"]))


def decode_image(data, path=""):
    """Decodes JPEG/PNG/BMP bytes to RGB exactly as OpenCV's `imread(path, IMREAD_COLOR)`.

    JPEG uses libjpeg's accurate integer DCT (`tf.io.decode_image` has no dct_method and uses the
    fast one: 65-90% of samples off, by up to ~25 levels at quality 100). EXIF orientation is ignored, as
    MATLAB's imread and the OpenCV of the author's era did (OpenCV >= 3.1 rotates unless
    IMREAD_IGNORE_ORIENTATION): the published numbers were computed on the stored pixels. PNG: grey
    is replicated, alpha dropped (not composited), palettes expanded, 16-bit reduced to its high byte,
    all as OpenCV does. CMYK JPEGs (rare) may differ from OpenCV by one level: TensorFlow converts
    them to RGB with its own rounding and exposes no CMYK output.

    Args:
      data: scalar tf.string, the encoded file.
      path: scalar tf.string naming the file in the error message.
    Returns:
      uint8 [H, W, 3] RGB; greyscale images are replicated to three channels (a few ADE20K JPEGs are grey).
    Raises:
      tf.errors.InvalidArgumentError: not a decodable image, or one of a kind `image_problem` refuses.
    """
    problem = image_problem(data)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG_MAGIC)
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(problem, ""),
                                                      [tf.strings.join([path, ": ", problem])])]):
        image = tf.cond(
            is_jpeg,
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def read_bytes(path):
    """Reads a local or gs:// file; a missing or unreadable file is a UserError naming it."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except (tf.errors.OpError, OSError) as e:
        raise UserError(f"{path}: cannot read file ({first_line(e)})") from None


# TensorFlow wraps an op's message in a `{{function_node ...}}` prefix and an `[Op:...]` suffix.
TF_NOISE = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$")


def first_line(error):
    """The first line of an exception's message, without TF's `{{function_node ...}}` prefix and
    `[Op:...]` suffix (TF errors carry long multi-line ones)."""
    text = (getattr(error, "message", None) or str(error)).strip()
    text = TF_NOISE.sub("", text.splitlines()[0] if text else "")
    return text or type(error).__name__


def image_array(data, path, opencv_formats=False):
    """Host-side `decode_image`: encoded bytes -> uint8 RGB [H, W, 3] NumPy, UserError naming `path`.

    Args:
      data: bytes of the encoded file.
      path: the file's name for error messages.
      opencv_formats: also read TIFF and WebP, which TensorFlow cannot decode, with OpenCV
        (IMREAD_IGNORE_ORIENTATION, the behaviour `decode_image` reproduces for JPEG and PNG). Only
        predict does: a dataset's images must decode in the tf.data graph too.
    """
    if opencv_formats and any(data[at:at + len(magic)] == magic for at, magic in _OPENCV_ONLY):
        import cv2  # only predict's TIFF/WebP inputs need it

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise UserError(f"{path}: cannot decode image, truncated or not an image")
        return image[..., ::-1].copy()
    return _decode_on_host(data, path, "image", image_problem, lambda d: decode_image(d, path))


def read_image(path, opencv_formats=False):
    """Reads and decodes one image file as every pipeline does: uint8 RGB [H, W, 3] NumPy.

    Args:
      path: local or gs:// file.
      opencv_formats: also read TIFF and WebP (see `image_array`).
    Raises:
      UserError: the file is missing, unreadable, or not a decodable image (the message names it).
    """
    return image_array(read_bytes(path), path, opencv_formats)


# ---- labels ----

# What a layout's label files are (docs/datasets.md), and the PNG (bit depth, colour type) pairs
# each accepts. Decoders would silently turn anything else into other values: a 16-bit PNG into its
# high byte (ADE 1..150 -> all 0 = ignore), an RGB image into palette indices.
GREY = "grey"  # ADE20K, Cityscapes labelIds/labelTrainIds, folder datasets, TFRecords: values as stored
VOC_PALETTE = "voc_palette"  # VOC SegmentationClass: palette indices; also as RGB colours or grey indices
_ACCEPTED = {GREY: ((8, 0),), VOC_PALETTE: ((8, 0), (8, 2), (1, 3), (2, 3), (4, 3), (8, 3))}
_EXPECTED = {
    GREY: "expected an 8-bit single-channel (grey) PNG of label values",
    VOC_PALETTE: "expected a VOC palette PNG (or its colours as 8-bit RGB, or the indices as 8-bit grey)",
}
_UNMAPPED = {GREY: ": label values outside [0, K) and 255 after the dataset's mapping",
             VOC_PALETTE: ": label values outside [0, K) and 255, or colours not in the VOC palette"}
_COLOUR_TYPES = ("grey", "colour type 1", "RGB", "palette", "grey+alpha", "colour type 5", "RGBA",
                 "unknown colour type")


def png_header(data):
    """(is_png bool, bit_depth int32, colour_type int32) from the signature and IHDR (graph-safe).

    Args:
      data: scalar tf.string, the encoded file (any length).
    """
    raw = head_bytes(data, 26)
    is_png = (tf.reduce_all(tf.equal(raw[:8], np.frombuffer(_PNG_SIGNATURE, np.uint8)))
              & tf.reduce_all(tf.equal(raw[12:16], np.frombuffer(b"IHDR", np.uint8))))
    return is_png, tf.cast(raw[24], tf.int32), tf.cast(raw[25], tf.int32)


def label_problem(data, expect):
    """What is wrong with a label file for its layout, '' when nothing is (graph-safe).

    Args:
      data: scalar tf.string, the encoded label file.
      expect: GREY or VOC_PALETTE, the layout's kind of label file.
    Returns:
      scalar tf.string, e.g. '16-bit grey PNG; expected an 8-bit single-channel (grey) PNG ...'.
    """
    is_png, depth, colour = png_header(data)
    accepted = tf.constant(_ACCEPTED[expect], tf.int32)
    ok = tf.reduce_any(tf.reduce_all(tf.equal(accepted, tf.stack([depth, colour])), axis=1))
    found = tf.strings.join([tf.strings.as_string(depth), "-bit ",
                             tf.gather(_COLOUR_TYPES, tf.minimum(colour, len(_COLOUR_TYPES) - 1)), " PNG"])
    found = tf.where(is_png, found, "not a PNG file")
    return tf.where(is_png & ok, "", tf.strings.join([found, "; ", _EXPECTED[expect]]))


def label_values(data, expect):
    """Decodes a label file that `label_problem` accepts to its raw values.

    Args:
      data: scalar tf.string, the encoded label PNG.
      expect: GREY (values as stored) or VOC_PALETTE (colours inverted through the VOC palette).
    Returns:
      int32 [H, W] raw values 0..255, INVALID where a colour is not in the VOC palette.
    """
    def grey():
        return tf.cast(tf.io.decode_png(data, channels=1)[..., 0], tf.int32)

    if expect == GREY:
        values = grey()
    else:
        _, _, colour = png_header(data)
        values = tf.cond(tf.equal(colour, 0), grey,
                         lambda: voc_palette_index(tf.io.decode_png(data, channels=3)))
    values.set_shape([None, None])
    return values


def label_array(data, path, expect):
    """Host-side label decode: raw values as int32 [H, W] NumPy (INVALID: colour not in the palette).

    Raises:
      UserError: the file is not of the layout's kind, or cannot be decoded (the message names it).
    """
    return _decode_on_host(data, path, "label", lambda d: label_problem(d, expect),
                           lambda d: label_values(d, expect))


def _decode_on_host(data, path, what, problem_of, decode):
    """Runs a graph-safe check and decoder eagerly on bytes; either's failure is a UserError naming `path`."""
    data = tf.constant(data)
    problem = problem_of(data).numpy().decode()
    if problem:
        raise UserError(f"{path}: {problem}")
    try:
        return decode(data).numpy()
    except tf.errors.OpError as e:
        raise UserError(f"{path}: cannot decode {what}, truncated or not an image ({first_line(e)})") from None


def label_colours(data):
    """uint8 [H, W, 3] colours of a label PNG (to name the colours that are not in the palette)."""
    return tf.io.decode_png(data, channels=3)


def voc_palette_index(rgb):
    """Inverts the VOC bit-shift palette.

    OpenCV and `tf.io.decode_png` expand VOC's palette ("P" mode) PNGs to colours, so the class
    indices are recovered from the colours (docs/datasets.md, PASCAL VOC).

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


def decode_label(data, lut, expect, path):
    """Decodes a label file under its layout's expectation and maps it to train ids (graph-safe).

    Args:
      data: scalar tf.string, the encoded label PNG.
      lut: int32 [256] train id for each raw value (INVALID where undefined).
      expect: GREY or VOC_PALETTE.
      path: scalar tf.string naming the file in the error message.
    Returns:
      int32 [H, W] train ids, 255 = ignore, INVALID where the raw value has no mapping.
    Raises:
      tf.errors.InvalidArgumentError: a file of another kind ('<path>: <what it is>; expected ...').
    """
    problem = label_problem(data, expect)
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(problem, ""),
                                                      [tf.strings.join([path, ": ", problem])])]):
        values = label_values(data, expect)
    if expect == GREY:  # grey values are 0..255: index the table directly, one pass, no select
        return tf.gather(lut, values)
    return apply_lut(values, lut)


def apply_lut(values, lut):
    """Maps raw label values to train ids through a 256-entry table.

    Args:
      values: int32 [H, W] raw values (INVALID, or anything outside 0..255, has no mapping).
      lut: int32 [256] train id for each raw value (INVALID where undefined).
    Returns:
      int32 [H, W] train ids, 255 = ignore, INVALID where the raw value has no mapping.
    """
    values = tf.convert_to_tensor(values, tf.int32)
    mapped = tf.gather(lut, tf.clip_by_value(values, 0, 255))
    return tf.where((values < 0) | (values > 255), INVALID, mapped)


def identity_lut(num_classes):
    """Train ids stored as they are: 0..K-1 and 255; every other value is invalid."""
    lut = np.full(256, INVALID, np.int32)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return lut


def checked_label(train_ids, image_shape, path, expect=GREY):
    """Asserts (in graph or eagerly) that a label fits its image and holds only valid train ids.

    Args:
      train_ids: int32 [H, W] mapped label, INVALID for values outside the mapping.
      image_shape: int32 [3] shape of the image.
      path: scalar tf.string naming the label file for the error message.
      expect: the layout's label format (VOC_PALETTE: an unmapped value may be an off-palette colour).
    Returns:
      uint8 [H, W] train ids.
    Raises:
      tf.errors.InvalidArgumentError: size mismatch or an unmapped value (message names the file).
    """
    shape = tf.shape(train_ids)
    shape_ok = tf.reduce_all(tf.equal(shape, image_shape[:2]))
    values_ok = tf.reduce_all(train_ids >= 0)

    def size(s):
        return tf.strings.join([tf.strings.as_string(s[0]), "x", tf.strings.as_string(s[1])])

    with tf.control_dependencies([
            tf.debugging.Assert(shape_ok, [tf.strings.join(
                [path, ": label/image size mismatch: label is ", size(shape), " but image is ",
                 size(image_shape)])]),
            tf.debugging.Assert(values_ok, [tf.strings.join(
                [path, _UNMAPPED[expect]])])]):
        return tf.cast(tf.identity(train_ids), tf.uint8)


def encode_label_png(label):
    """Encodes a uint8 [H, W] label as a lossless grey PNG (bytes)."""
    return tf.io.encode_png(tf.convert_to_tensor(label, tf.uint8)[..., None]).numpy()
