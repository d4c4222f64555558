"""The author's sliding window as TensorFlow ops: padding, tiling, flip merge, count-map blending.

Source: evaluation/scale_process.m, pre_img.m and caffe_process.m (docs/caffe_reference.md §3.3-3.5).
All sizes may be dynamic. Tiles are gathered in one op and added one at a time into running sums, so no
Python loop runs over pixels or tiles and a scale's tile probabilities never have to be held together.
"""

import collections

import tensorflow as tf

# Where the tiles of one scaled image sit: starts along each axis and the padded and unpadded sizes.
TileLayout = collections.namedtuple("TileLayout", "row_starts col_starts padded_hw image_hw")
# The running sums of `blend_add`: all tiles so far [hp, wp, K] and the current tile row [crop_h, wp, K].
BlendState = collections.namedtuple("BlendState", "total row")


def tile_starts(length, crop, stride):
    """0-based tile starts along one axis: stride apart, the last tile snapped to the border.

    scale_process.m: `grid = ceil(single(len-crop)/stride) + 1; s = (g-1)*stride + 1;
    e = min(s + crop - 1, len); s = e - crop + 1`.

    Args:
      length: int32 scalar, padded length (>= crop).
      crop, stride: int32 scalars.

    Returns:
      int32 [n] tile starts.
    """
    n = (length - crop + stride - 1) // stride + 1
    starts = tf.range(n) * stride
    return tf.minimum(starts + crop, length) - crop


def make_tiles(image, crop_hw, mean_rgb):
    """Pads a resized uint8 image as the author does and cuts it into crop-sized tiles.

    Two pad values, as in the MATLAB code: when the image fits in one crop, pre_img.m pads the
    *single* image with the exact mean (so the net sees exactly 0 there); otherwise scale_process.m
    pads the *uint8* image, which casts the mean to uint8 (124/117/104 rather than 123.68/...).

    Args:
      image: uint8 [h, w, 3] RGB, already resized.
      crop_hw: (crop_h, crop_w) Python ints.
      mean_rgb: 3 floats, the model's mean.

    Returns:
      tiles: float32 [n, crop_h, crop_w, 3] RGB 0..255 (row-major over the tile grid);
      layout: TileLayout.
    """
    crop_h, crop_w = crop_hw
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    mean = tf.constant(mean_rgb, tf.float32)
    fits = tf.logical_and(h <= crop_h, w <= crop_w)
    pad_value = tf.where(fits, mean, tf.floor(mean + 0.5))  # uint8 cast = MATLAB round
    hp, wp = tf.maximum(h, crop_h), tf.maximum(w, crop_w)
    padded = _pad_post(tf.cast(image, tf.float32), hp, wp, pad_value)
    stride_h = -(-crop_h * 2 // 3)  # ceil(2/3·crop): 316 for 473, 476 for 713
    stride_w = -(-crop_w * 2 // 3)
    rows = tile_starts(hp, crop_h, stride_h)
    cols = tile_starts(wp, crop_w, stride_w)
    row_idx = rows[:, None] + tf.range(crop_h)[None, :]
    col_idx = cols[:, None] + tf.range(crop_w)[None, :]
    tiles = tf.gather(tf.gather(padded, row_idx, axis=0), col_idx, axis=2)  # [gh, ch, gw, cw, 3]
    tiles = tf.reshape(tf.transpose(tiles, [0, 2, 1, 3, 4]), [-1, crop_h, crop_w, 3])
    return tiles, TileLayout(rows, cols, (hp, wp), (h, w))


def _pad_post(x, hp, wp, value):
    """Pads [h, w, 3] bottom/right to [hp, wp, 3] with a per-channel value (concat keeps pixels exact)."""
    h, w = tf.shape(x)[0], tf.shape(x)[1]
    x = tf.concat([x, tf.ones([hp - h, w, 3], x.dtype) * value], axis=0)
    return tf.concat([x, tf.ones([hp, wp - w, 3], x.dtype) * value], axis=1)


def merge_flip(logits, flip):
    """Per-tile probabilities from network logits, as caffe_process.m combines them.

    With flip, the net's outputs for a tile and its mirror image are *summed as logits* and then
    soft-maxed: `softmax(z(x) + flip(z(flip(x))))`. MATLAB's softmax skips the max subtraction; the
    stable tf.nn.softmax gives the same values wherever MATLAB's does not overflow.

    Args:
      logits: float [2n, h, w, K] with each tile followed by its mirrored copy when `flip`, else [n, ...].
      flip: Python bool.

    Returns:
      float32 [n, h, w, K] probabilities.
    """
    logits = tf.cast(logits, tf.float32)
    if flip:
        shape = tf.shape(logits)
        pairs = tf.reshape(logits, tf.concat([[-1, 2], shape[1:]], axis=0))
        logits = pairs[:, 0] + tf.reverse(pairs[:, 1], axis=[2])
    return tf.nn.softmax(logits, axis=-1)


def blend(probs, layout):
    """Averages overlapping tile probabilities with the count map and crops the padding away.

    Args:
      probs: float32 [gh·gw, crop_h, crop_w, K], tiles in row-major grid order.
      layout: TileLayout of the tiles.

    Returns:
      float32 [h, w, K] at the resized image's size.
    """
    shape = tf.shape(probs)
    state = blend_start(layout, shape[1], shape[3])
    _, state = tf.while_loop(lambda t, _: t < shape[0],
                             lambda t, state: (t + 1, blend_add(state, probs[t], t, layout)),
                             (tf.constant(0), state), parallel_iterations=1)
    return blend_finish(state, layout, shape[1], shape[2])


def blend_start(layout, crop_h, num_classes):
    """The empty sums of `blend_add`: (total float32 [hp, wp, K], current tile row [crop_h, wp, K])."""
    hp, wp = layout.padded_hw
    return BlendState(tf.zeros([hp, wp, num_classes]), tf.zeros([crop_h, wp, num_classes]))


def blend_add(state, tile, t, layout):
    """Adds tile t (row-major grid order; tiles must come in that order) to the sums.

    scale_process.m adds every tile into `data_scale` and 1 into `count_scale`. The sums keep the float
    order of the segment sums they replaced (bit for bit): each tile row's tiles added left to right
    from zero, then the row sums top to bottom from zero; the zeros of the padding change no bit. One
    tile at a time, so the tiles of a scale never have to be held together.

    Args:
      state: BlendState.
      tile: float32 [crop_h, crop_w, K] probabilities.
      t: int32 scalar, the tile's index in the grid.
      layout: TileLayout.

    Returns:
      BlendState.
    """
    gw = tf.shape(layout.col_starts)[0]
    hp, wp = layout.padded_hw
    ch, cw = tf.shape(tile)[0], tf.shape(tile)[1]
    c0, r0 = layout.col_starts[t % gw], layout.row_starts[t // gw]
    row = state.row + tf.pad(tile, [[0, 0], [c0, wp - c0 - cw], [0, 0]])
    return BlendState(*tf.cond(
        t % gw == gw - 1,
        lambda: (state.total + tf.pad(row, [[r0, hp - r0 - ch], [0, 0], [0, 0]]), tf.zeros_like(row)),
        lambda: (state.total, row)))


def blend_finish(state, layout, crop_h, crop_w):
    """The sums divided by the count map, cropped to the resized image: float32 [h, w, K].

    The count map is the outer product of per-axis coverage counts (small integers, exact in float32).
    """
    hp, wp = layout.padded_hw
    row_ids = tf.reshape(layout.row_starts[:, None] + tf.range(crop_h)[None, :], [-1])
    col_ids = tf.reshape(layout.col_starts[:, None] + tf.range(crop_w)[None, :], [-1])
    row_count = tf.math.unsorted_segment_sum(tf.ones_like(row_ids, tf.float32), row_ids, hp)
    col_count = tf.math.unsorted_segment_sum(tf.ones_like(col_ids, tf.float32), col_ids, wp)
    h, w = layout.image_hw
    count = row_count[:h, None, None] * col_count[None, :w, None]
    return state.total[:h, :w] / count
