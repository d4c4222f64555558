"""The PSPNet training objective: pixel-wise softmax cross-entropy on the main and auxiliary logits.

The logits arrive already upsampled to the crop (build_pspnet's Interp, align corners), as in the
author's training and semseg: the loss is taken at full crop resolution, never on 1/8 features.
Pixels labelled `ignore_label` (255) count neither in the sum nor in the normaliser.
"""

import tensorflow as tf

from psp_tf.classes import IGNORE_LABEL


def cross_entropy_sum(logits, labels, ignore_label=IGNORE_LABEL):
    """Sum of per-pixel cross-entropy over the non-ignored pixels, and their count.

    Args:
      logits: float [B, H, W, K] (any float dtype; computed in float32).
      labels: integer [B, H, W]; values in [0, K) or `ignore_label`.

    Returns:
      (loss_sum, count): float32 scalars. Dividing by the *global* count (all replicas) gives the
      mean over the global batch, the same number whatever the replica split.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    # Ignored pixels get a dummy class 0 so the op stays in range; their loss is masked out below.
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    mask = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_pixel * mask), tf.reduce_sum(mask)


def pspnet_loss_sums(outputs, labels, aux_weight, ignore_label=IGNORE_LABEL):
    """Per-replica sums of CE(main) and CE(aux) and the valid pixel count.

    Args:
      outputs: main logits [B, H, W, K], or [main, aux] logits (both [B, H, W, K]).
      labels: integer [B, H, W].
      aux_weight: weight of the auxiliary loss (0.4 in the paper); ignored without an aux output.

    Returns:
      dict with float32 scalars `main_sum`, `aux_sum` (0 without aux) and `count`.
    """
    if isinstance(outputs, (list, tuple)):
        main, aux = outputs
    else:
        main, aux = outputs, None
    main_sum, count = cross_entropy_sum(main, labels, ignore_label)
    aux_sum = tf.zeros([], tf.float32)
    if aux is not None and aux_weight > 0:
        aux_sum, _ = cross_entropy_sum(aux, labels, ignore_label)
    return {"main_sum": main_sum, "aux_sum": aux_sum, "count": count}


def combine(sums, global_count, aux_weight):
    """CE(main) + aux_weight * CE(aux), each a mean over the global batch's valid pixels.

    `global_count` is clipped at 1 so a batch that is entirely ignore gives a zero loss, not NaN.
    """
    denom = tf.maximum(global_count, 1.0)
    main = sums["main_sum"] / denom
    aux = sums["aux_sum"] / denom
    return main + aux_weight * aux, main, aux
