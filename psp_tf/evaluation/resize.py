"""MATLAB `imresize(..., 'bilinear')` and MATLAB `round` as TensorFlow ops.

The author's evaluation (docs/caffe_reference.md §3.2, §3.4) resizes the uint8 image to a long side of
`base_size·s + 1` and the probability maps back to the original size with MATLAB's `imresize`. That is a
separable resampler with half-pixel centres whose triangle kernel is widened by 1/scale when shrinking
(antialiasing), border indices clamped, weights renormalised per output pixel, the dimension with the
smaller scale resized first, and, for uint8 input, a rounded uint8 result after *each* dimension (the
MEX kernel returns the input class). Every size here may be dynamic, so the SavedModel export can resize
images of any size inside the graph.
"""

import collections

import tensorflow as tf


def matlab_round(x):
    """MATLAB `round`: halves away from zero (Python and NumPy round halves to even).

    Args:
      x: float tensor.

    Returns:
      Float tensor of the same dtype.
    """
    return tf.sign(x) * tf.floor(tf.abs(x) + 0.5)


def scaled_size(height, width, long_side):
    """The author's resized size: long side `long_side`, short side scaled in single precision.

    eval_sub.m: `new_cols = round(long_size/single(ori_rows)*ori_cols)` (a square image takes the
    width branch). The arithmetic is float32, as MATLAB's `single`, then MATLAB `round`.

    Args:
      height, width: int32 scalars, the original size.
      long_side: float scalar, `base_size·s + 1` (imresize takes the ceiling of a fractional size).

    Returns:
      (new_height, new_width) int32 scalars.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    long_f = tf.cast(long_side, tf.float32)
    long_i = tf.cast(tf.math.ceil(long_f), tf.int32)
    portrait = height > width
    short = tf.where(portrait, matlab_round(long_f / h * w), matlab_round(long_f / w * h))
    short = tf.maximum(tf.cast(short, tf.int32), 1)
    return tf.where(portrait, long_i, short), tf.where(portrait, short, long_i)


def contributions(in_length, out_length):
    """Weights and source indices of MATLAB imresize's bilinear kernel along one dimension.

    Mirrors imresize.m `contributions` (R2007a-R2016 era): triangle kernel of width 2, widened by
    1/scale and scaled by `scale` when shrinking; `u = x/scale + 0.5·(1 − 1/scale)` (half-pixel
    centres); P = ceil(width) + 2 taps from `floor(u − width/2)`; rows normalised to sum 1; indices
    then clamped to the image ("has the effect of replicating end-points"). Zero-weight taps are kept:
    they contribute exact zeros, as MATLAB's dropped columns do.

    Args:
      in_length, out_length: int32 scalars.

    Returns:
      weights: float64 [out_length, P]; indices: int32 [out_length, P], 0-based.
    """
    in_f = tf.cast(in_length, tf.float64)
    scale = tf.cast(out_length, tf.float64) / in_f
    kernel_scale = tf.minimum(scale, 1.0)  # antialiasing only when shrinking
    kernel_width = 2.0 / kernel_scale
    x = tf.range(1, out_length + 1, dtype=tf.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = tf.floor(u - kernel_width / 2.0)
    taps = tf.cast(tf.math.ceil(kernel_width), tf.int32) + 2
    indices = left[:, None] + tf.range(taps, dtype=tf.float64)[None, :]
    # MATLAB's triangle: (1+x) on [-1,0), (1-x) on [0,1], i.e. max(0, 1-|x|) bit for bit.
    weights = kernel_scale * tf.nn.relu(1.0 - tf.abs(kernel_scale * (u[:, None] - indices)))
    # Summed left to right as MATLAB's sum(weights, 2): reduce_sum's vectorised order changes the last
    # bit, which flips uint8 rounding of exact halves.
    weights = weights / tf.math.cumsum(weights, axis=1)[:, -1:]
    indices = tf.cast(tf.clip_by_value(indices, 1.0, in_f), tf.int32) - 1
    return weights, indices


def _resize_axis(x, weights, indices, axis, round_uint8):
    """Resamples `x` [H, W, C] along `axis` (0 or 1, may be a tensor) with one tap at a time (memory
    stays ~2x output)."""
    shape = tf.where(tf.range(3) == axis, -1, 1)
    w = tf.cast(weights, x.dtype)

    def tap(p):
        return tf.gather(x, indices[:, p], axis=axis) * tf.reshape(w[:, p], shape)

    taps = tf.shape(weights)[1]
    # parallel_iterations=1: the tap index does not depend on the sum, so TensorFlow would otherwise
    # gather up to 10 taps ahead, each as large as the output.
    _, out = tf.while_loop(lambda p, acc: p < taps, lambda p, acc: (p + 1, acc + tap(p)),
                           (tf.constant(1), tap(0)), parallel_iterations=1)
    if round_uint8:
        # imresizemex returns uint8 for uint8 input: saturate and round after every dimension.
        out = tf.floor(tf.clip_by_value(out, 0.0, 255.0) + 0.5)
    return out


# Output indices per dense block of a float resize (measured on 2 Zen 4 cores with K = 150: larger
# row blocks read more zeros, smaller column blocks make too many small matmuls).
ROW_BLOCK = 16
COL_BLOCK = 64

BandMatrices = collections.namedtuple("BandMatrices", "matrices starts out_length")


def band_matrices(weights, indices, in_length, block):
    """One axis' contributions as dense float32 matrices over blocks of `block` consecutive outputs.

    Output o of block b = o // block reads input indices starts[b] .. starts[b] + S - 1 (S, the widest
    block's span, the same for all blocks), with weight matrices[b, o % block, i - starts[b]]; taps that
    MATLAB clamps onto the same input index are summed (in float64, then rounded once to float32), every
    other entry is an exact zero. So a matmul over a block computes each output as the float32 sum of
    its nonzero taps' products (exact zeros add nothing), in the matmul's order.

    Args:
      weights: float64 [out, P]; indices: int32 [out, P] (contributions, possibly a slice of rows).
      in_length: int32 scalar, the input length (indices < in_length).
      block: Python int.

    Returns:
      BandMatrices: matrices float32 [nb, block, S], starts int32 [nb], out_length int32 scalar.
    """
    out = tf.shape(weights)[0]
    blocks = (out + block - 1) // block
    owner = tf.range(out) // block
    low = tf.math.unsorted_segment_min(tf.reduce_min(indices, axis=1), owner, blocks)
    high = tf.math.unsorted_segment_max(tf.reduce_max(indices, axis=1), owner, blocks)
    span = tf.minimum(tf.reduce_max(high - low) + 1, in_length)
    starts = tf.minimum(low, in_length - span)
    column = indices - tf.gather(starts, owner)[:, None]  # [out, P], in 0..span-1
    # One-hot sum over the taps (a fixed-order float64 reduction, not a scatter of duplicates).
    dense = tf.reduce_sum(weights[:, :, None] * tf.one_hot(column, span, dtype=tf.float64), axis=1)
    dense = tf.pad(dense, [[0, blocks * block - out], [0, 0]])
    return BandMatrices(tf.cast(tf.reshape(dense, [blocks, block, span]), tf.float32), starts, out)


def apply_band(x, band, axis):
    """Resamples float32 `x` [H, W, C] along `axis` (Python 0 or 1) with band_matrices: one gather of
    each block's input span and one batched matmul."""
    blocks, block, span = (tf.shape(band.matrices)[i] for i in range(3))
    read = tf.reshape(band.starts[:, None] + tf.range(span)[None, :], [-1])
    if axis == 0:
        rest = tf.shape(x)[1:]
        spans = tf.reshape(tf.gather(x, read), [blocks, span, -1])
        out = tf.reshape(tf.matmul(band.matrices, spans), tf.concat([[blocks * block], rest], 0))
        return out[:band.out_length]
    rows, channels = tf.shape(x)[0], tf.shape(x)[2]
    spans = tf.reshape(tf.gather(x, read, axis=1), [rows, blocks, span, channels])
    out = tf.reshape(tf.matmul(band.matrices[None], spans), [rows, blocks * block, channels])
    return out[:, :band.out_length]


ResizePlan = collections.namedtuple("ResizePlan", "row_weights row_indices col_weights col_indices rows_first "
                                                  "in_height columns")


def resize_plan(in_height, in_width, out_height, out_width, bands=True):
    """Both axes' contributions and imresize.m's dimension order for one resize.

    Args:
      in_height, in_width, out_height, out_width: int32 scalars.
      bands: Python bool: also build the column band matrices, which only the float path
        (imresize_rows) reads; the uint8 path (tap_resize) passes False rather than build them for nothing.

    Returns:
      ResizePlan: weights float64 [out, P] and 0-based indices int32 [out, P] per axis; `rows_first`
      a bool scalar; `in_height`; `columns`, the column contributions as BandMatrices (None without
      `bands`).
    """
    w_rows, i_rows = contributions(in_height, out_height)
    w_cols, i_cols = contributions(in_width, out_width)
    scale_rows = tf.cast(out_height, tf.float64) / tf.cast(in_height, tf.float64)
    scale_cols = tf.cast(out_width, tf.float64) / tf.cast(in_width, tf.float64)
    # imresize.m dimensionOrder: `sort(scale)`, stable, so rows go first on a tie. With uint8
    # rounding between the passes the order changes results.
    columns = band_matrices(w_cols, i_cols, in_width, COL_BLOCK) if bands else None
    return ResizePlan(w_rows, i_rows, w_cols, i_cols, scale_rows <= scale_cols, in_height, columns)


def tap_resize(x, plan, round_uint8):
    """Both passes of `plan` tap by tap (_resize_axis), in imresize.m's dimension order.

    The uint8 image path (round_uint8: MATLAB's rounding after each pass); with float input and
    round_uint8=False it is the float resize before the band matrices, which the tests keep as the
    reference of imresize_rows. imresize.m's dimensionOrder is `sort(scale)`, stable, so rows go first
    on a tie; with uint8 rounding between the passes the order changes results. The order is picked
    by selecting the axes and weights, not by a tf.cond around the two passes: Grappler cannot
    topologically sort a while_loop inside a cond branch once the function is inlined into another one
    (the evaluator's step), and logs "dependency_optimizer.cc ... topological sort failed" on every run.
    """
    first = tf.where(plan.rows_first, 0, 1)
    w1, i1, w2, i2 = tf.cond(plan.rows_first,
                             lambda: (plan.row_weights, plan.row_indices, plan.col_weights, plan.col_indices),
                             lambda: (plan.col_weights, plan.col_indices, plan.row_weights, plan.row_indices))
    return _resize_axis(_resize_axis(x, w1, i1, first, round_uint8), w2, i2, 1 - first, round_uint8)


def imresize(image, out_height, out_width):
    """MATLAB `imresize(image, [out_height out_width], 'bilinear')`.

    Args:
      image: [H, W, C] uint8 (result rounded to uint8 after each dimension, computed in float64 as the
        MEX file does, tap by tap in imresize.m's dimension order) or float32 (e.g. probabilities:
        rows then columns as band matrices, imresize_rows).
      out_height, out_width: int32 scalars.

    Returns:
      [out_height, out_width, C] tensor of the input dtype.
    """
    is_float = image.dtype != tf.uint8
    plan = resize_plan(tf.shape(image)[0], tf.shape(image)[1], out_height, out_width, bands=is_float)
    if is_float:
        return imresize_rows(image, plan, 0, out_height)
    out = tap_resize(tf.cast(image, tf.float64), plan, round_uint8=True)
    return tf.cast(out, tf.uint8)


def imresize_rows(image, plan, start, stop):
    """Output rows start..stop-1 of the float `imresize` with `plan`: rows, then columns, each pass one
    batched matmul of band matrices (band_matrices) over the input rows and columns it reads.

    The exact values are imresize.m's (a linear map, so the dimension order only changes rounding);
    each output is a float32 sum of at most P nonzero tap products per pass, in the matmul's order,
    so it lies within float32 rounding of MATLAB's (and of any other strip split) but is not promised
    bit for bit across strip splits: a matmul's summation order may depend on its shapes. Rows go
    first whatever imresize.m's order: on a strip the row pass then works on the narrower input.

    Args:
      image: float32 [H, W, C] (the plan's input size).
      plan: resize_plan(H, W, out_height, out_width).
      start, stop: int32 scalars, 0 <= start < stop <= out_height.

    Returns:
      float32 [stop - start, out_width, C].
    """
    rows = band_matrices(plan.row_weights[start:stop], plan.row_indices[start:stop], plan.in_height,
                         ROW_BLOCK)
    return apply_band(apply_band(image, rows, 0), plan.columns, 1)
