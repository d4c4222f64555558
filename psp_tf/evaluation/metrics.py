"""Segmentation metrics as the author defines them, from a confusion matrix summed over the dataset.

Source: evaluation/eval_acc.m, intersectionAndUnion.m, pixelAccuracy.m (docs/caffe_reference.md
§3.7) with the ADE20K fix of §0.10: everything is counted in train-id space (network channel k;
255 = ignore), which for ADE20K is raw label k+1 against prediction 1 + argmax with raw 0 ignored.
"""

import numpy as np
import tensorflow as tf

from psp_tf.classes import IGNORE_LABEL
# eval_acc.m adds MATLAB's eps to each class's union once per image: IoU_c = ΣI_c / Σ(eps + U_c).
MATLAB_EPS = float(np.finfo(np.float64).eps)


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """Counts of (ground truth, prediction) pairs over the non-ignored pixels of one image.

    Args:
      labels: int [H, W] train ids, `ignore_label` = not scored.
      predictions: int [H, W] train ids 0..K-1 (same size: the protocol predicts at label size).
      num_classes: K.

    Returns:
      int64 [K, K]: rows = ground truth, columns = prediction.

    Raises:
      tf.errors.InvalidArgumentError: a label outside 0..K-1 that is not `ignore_label`.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    valid = tf.not_equal(labels, ignore_label)
    labels = tf.boolean_mask(labels, valid)
    predictions = tf.boolean_mask(predictions, valid)
    k = tf.constant(num_classes, tf.int64)
    checks = [tf.debugging.assert_less(labels, k, message="label outside 0..K-1 and not ignored"),
              tf.debugging.assert_non_negative(labels, message="negative label")]
    with tf.control_dependencies(checks):
        counts = tf.math.bincount(labels * k + predictions, minlength=num_classes * num_classes,
                                  maxlength=num_classes * num_classes, dtype=tf.int64)
    return tf.reshape(counts, [num_classes, num_classes])


def summarize(confusion, class_names=None, num_images=1):
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU, in percent.

    As eval_acc.m: IoU_c = I_c / (U_c + n·eps) with sums over the whole dataset (not per image),
    mIoU = the mean over *all* K classes (a class absent from both ground truth and predictions
    scores 0 and still counts); pixel accuracy = ΣI / Σlabelled. The author reports no class
    accuracy; `mean_accuracy` is the mean over all classes of I_c / (L_c + n·eps), the same
    convention (the author's PyTorch successor, semseg, uses I/(L + 1e-10)).

    `mean_iou_present` is mmsegmentation's mIoU (IoUMetric: a class with no pixel in either the
    ground truth or the predictions has IoU 0/0 = NaN, and np.nanmean skips it): the mean over the
    `present_classes` classes that occur in the ground truth or the predictions. On a subset
    (--max_images) it is the readable figure; the author's `mean_iou` stays the headline.

    Args:
      confusion: int [K, K], rows = ground truth, columns = prediction.
      class_names: K names (default 'class_i').
      num_images: images summed into `confusion` (only the eps term uses it).

    Returns:
      dict: mean_iou, pixel_accuracy, mean_accuracy (percent), per_class_iou {name: percent},
      per_class_accuracy {name: percent}, labelled_pixels, num_images, per_class_labelled_pixels and
      per_class_predicted_pixels {name: count} (predictions on labelled pixels), mean_iou_present
      (percent; None when nothing is labelled), present_classes.
    """
    confusion = np.asarray(confusion, np.float64)
    k = confusion.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k)]
    intersection = np.diag(confusion)
    labelled = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    union = labelled + predicted - intersection
    eps = MATLAB_EPS * max(int(num_images), 1)
    iou = intersection / (union + eps)
    accuracy = intersection / (labelled + eps)
    total = labelled.sum()
    present = union > 0
    return {
        "mean_iou": 100.0 * float(iou.mean()),
        "pixel_accuracy": 100.0 * float(intersection.sum() / total) if total else 0.0,
        "mean_accuracy": 100.0 * float(accuracy.mean()),
        "per_class_iou": {n: 100.0 * float(v) for n, v in zip(names, iou)},
        "per_class_accuracy": {n: 100.0 * float(v) for n, v in zip(names, accuracy)},
        "labelled_pixels": int(total),
        "num_images": int(num_images),
        "per_class_labelled_pixels": {n: int(v) for n, v in zip(names, labelled)},
        "per_class_predicted_pixels": {n: int(v) for n, v in zip(names, predicted)},
        "mean_iou_present": 100.0 * float(iou[present].mean()) if present.any() else None,
        "present_classes": int(present.sum()),
    }
