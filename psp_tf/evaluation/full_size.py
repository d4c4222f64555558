"""eval_sub.m after the scales, in row strips: score maps resized to the image, averaged, argmax.

Source: evaluation/eval_sub.m and scale_process.m (docs/caffe_reference.md §3.4-3.5). Runs on the host
(its sizes are the image's), in strips of rows so no [H, W, K] map exists unless asked for.
"""

import tensorflow as tf

from psp_tf.evaluation.resize import imresize_rows, resize_plan

# Bytes of one [rows, W, K] float32 strip of the full-size maps; a strip's working set is a few of them.
STRIP_BYTES = 32 << 20


def strip_rows(width, num_classes):
    """Output rows per strip: one [rows, width, K] float32 map fits in STRIP_BYTES (at least one row).

    Args:
      width: int32 scalar, the image width; num_classes: Python int K.

    Returns:
      int32 scalar.
    """
    row_bytes = tf.cast(width, tf.int64) * num_classes * 4
    return tf.cast(tf.maximum(tf.constant(STRIP_BYTES, tf.int64) // row_bytes, 1), tf.int32)


def full_size_result(scores, height, width, num_classes, probabilities=True):
    """eval_sub.m after the scales: each score map resized to the image, renormalised, averaged, argmax.

    Computed in strips of `strip_rows` output rows: imresize is separable and each output row reads a
    fixed few input rows, so each strip resizes only the input rows it reads (resize.imresize_rows: band
    matrices, one batched matmul per pass) and no [H, W, K] map is ever formed unless `probabilities`
    asks for it. The labels-only and the probabilities calls run the same strips, so their labels are
    the same bits; another strip height changes results only by float32 rounding.

    Args:
      scores: list over scales of float32 [h_s, w_s, K] score maps.
      height, width: int32 scalars, the image size.
      num_classes: Python int K.
      probabilities: also return the averaged probabilities (assembled from the strips).

    Returns:
      (labels int32 [H, W], probabilities float32 [H, W, K] or None).
    """
    plans = [resize_plan(tf.shape(s)[0], tf.shape(s)[1], height, width) for s in scores]
    rows = strip_rows(width, num_classes)
    steps = (height + rows - 1) // rows
    labels = tf.TensorArray(tf.int32, size=steps, infer_shape=False)
    probs = tf.TensorArray(tf.float32, size=steps if probabilities else 0, infer_shape=False)

    def body(i, labels, probs):
        start = i * rows
        strip = _strip_probabilities(scores, plans, start, tf.minimum(start + rows, height))
        if probabilities:
            probs = probs.write(i, strip)
        return i + 1, labels.write(i, tf.argmax(strip, axis=-1, output_type=tf.int32)), probs

    # parallel_iterations=1: one strip at a time is what bounds the memory.
    _, labels, probs = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), labels, probs),
                                     parallel_iterations=1)
    return labels.concat(), probs.concat() if probabilities else None


def _strip_probabilities(scores, plans, start, stop):
    """Rows start..stop-1 of the scale-averaged probabilities, float32 [stop - start, W, K]."""
    total = None
    for score, plan in zip(scores, plans):
        part = imresize_rows(score, plan, start, stop)
        # scale_process.m renormalises after the resize: bsxfun(@rdivide, data, sum(data, 3)).
        part = part / tf.reduce_sum(part, axis=-1, keepdims=True)
        total = part if total is None else total + part
    # eval_sub.m: data_all/size(scale_array,2); x / 1 is x, so one scale skips a full pass.
    return total / float(len(scores)) if len(scores) > 1 else total
