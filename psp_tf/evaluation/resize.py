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


ResizePlan = collections.namedtuple("ResizePlan", "row_weights row_indices col_weights col_indices rows_first")


def resize_plan(in_height, in_width, out_height, out_width):
    """Both axes' contributions and imresize.m's dimension order for one resize.

    Args:
      in_height, in_width, out_height, out_width: int32 scalars.

    Returns:
      ResizePlan: weights float64 [out, P] and 0-based indices int32 [out, P] per axis; `rows_first`
      a bool scalar.
    """
    w_rows, i_rows = contributions(in_height, out_height)
    w_cols, i_cols = contributions(in_width, out_width)
    scale_rows = tf.cast(out_height, tf.float64) / tf.cast(in_height, tf.float64)
    scale_cols = tf.cast(out_width, tf.float64) / tf.cast(in_width, tf.float64)
    # imresize.m dimensionOrder: `sort(scale)`, stable, so rows go first on a tie. With uint8
    # rounding between the passes the order changes results.
    return ResizePlan(w_rows, i_rows, w_cols, i_cols, scale_rows <= scale_cols)


def _apply_plan(x, row_weights, row_indices, plan, round_uint8):
    """Both passes in the plan's order, with the given (possibly sliced) row contributions.

    imresize.m's dimensionOrder is `sort(scale)`, stable, so rows go first on a tie; with uint8
    rounding between the passes the order changes results. The order is picked by selecting the axes
    and weights, not by a tf.cond around the two passes: Grappler cannot topologically sort a
    while_loop inside a cond branch once the function is inlined into another one (the evaluator's
    step), and logs "dependency_optimizer.cc ... topological sort failed" on every run.
    """
    first = tf.where(plan.rows_first, 0, 1)
    w1, i1, w2, i2 = tf.cond(plan.rows_first,
                             lambda: (row_weights, row_indices, plan.col_weights, plan.col_indices),
                             lambda: (plan.col_weights, plan.col_indices, row_weights, row_indices))
    return _resize_axis(_resize_axis(x, w1, i1, first, round_uint8), w2, i2, 1 - first, round_uint8)


def imresize(image, out_height, out_width):
    """MATLAB `imresize(image, [out_height out_width], 'bilinear')`.

    Args:
      image: [H, W, C] uint8 (result rounded to uint8 after each dimension, computed in float64 as the
        MEX file does) or float (result in the same float dtype, e.g. probabilities).
      out_height, out_width: int32 scalars.

    Returns:
      [out_height, out_width, C] tensor of the input dtype.
    """
    is_uint8 = image.dtype == tf.uint8
    x = tf.cast(image, tf.float64) if is_uint8 else image
    plan = resize_plan(tf.shape(image)[0], tf.shape(image)[1], out_height, out_width)
    out = _apply_plan(x, plan.row_weights, plan.row_indices, plan, is_uint8)
    return tf.cast(out, tf.uint8) if is_uint8 else out


def imresize_rows(image, plan, start, stop):
    """Output rows start..stop-1 of `imresize` with `plan`, computed from the input rows they need.

    Each output value is a fixed sum over taps whose input pixels depend only on its row and column, so
    resizing the slab of input rows that the wanted output rows read (the passes themselves unchanged)
    gives the very same floats as the whole resize, bit for bit, in either dimension order.

    Args:
      image: float [H, W, C] (the plan's input size).
      plan: resize_plan(H, W, out_height, out_width).
      start, stop: int32 scalars, 0 <= start < stop <= out_height.

    Returns:
      [stop - start, out_width, C] tensor of the input dtype.
    """
    indices = plan.row_indices[start:stop]
    first = tf.reduce_min(indices)  # indices grow with the output row: the slab is contiguous
    slab = image[first: tf.reduce_max(indices) + 1]
    return _apply_plan(slab, plan.row_weights[start:stop], indices - first, plan, False)
