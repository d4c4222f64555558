"""Metrics on hand-computable fixtures (the convention of docs/caffe_reference.md §3.7, ADE fix §0.10)."""

import numpy as np
import pytest
import tensorflow as tf

from psp_tf.evaluation import metrics

# 3 classes, one ignored pixel (255).
LABELS = np.array([[0, 0, 1, 1],
                   [0, 2, 1, 255],
                   [2, 2, 2, 1]])
PREDS = np.array([[0, 1, 1, 1],
                  [0, 2, 0, 0],
                  [2, 2, 1, 1]])


def test_confusion_matrix_hand_counted():
    conf = metrics.confusion_matrix(LABELS, PREDS, 3).numpy()
    # gt 0: preds 0,1,0 ; gt 1: 1,1,0,1 ; gt 2: 2,2,2,1 ; the 255 pixel (pred 0) is not counted.
    np.testing.assert_array_equal(conf, [[2, 1, 0], [1, 3, 0], [0, 1, 3]])
    assert conf.dtype == np.int64


def test_summary_hand_computed():
    conf = metrics.confusion_matrix(LABELS, PREDS, 3).numpy()
    s = metrics.summarize(conf, ["a", "b", "c"])
    # I = (2,3,3); L = (3,4,4); P = (3,5,3); U = L+P-I = (4,6,4)
    assert s["per_class_iou"] == pytest.approx({"a": 50.0, "b": 50.0, "c": 75.0})
    assert s["mean_iou"] == pytest.approx(175 / 3)
    assert s["pixel_accuracy"] == pytest.approx(100 * 8 / 11)
    assert s["per_class_accuracy"] == pytest.approx({"a": 200 / 3, "b": 75.0, "c": 75.0})
    assert s["mean_accuracy"] == pytest.approx((200 / 3 + 75 + 75) / 3)
    assert s["labelled_pixels"] == 11


def test_dataset_accumulation_is_not_a_mean_of_images():
    # Image 1: class 0 perfect on 1 pixel; image 2: class 0 wrong on 3 of 4 pixels.
    c1 = metrics.confusion_matrix(np.array([[0, 1]]), np.array([[0, 1]]), 2).numpy()
    c2 = metrics.confusion_matrix(np.array([[0, 0, 0, 0]]), np.array([[0, 1, 1, 1]]), 2).numpy()
    s = metrics.summarize(c1 + c2, num_images=2)
    # class 0: I=2, U=5 -> 40% (per-image means would give (100+25)/2); class 1: I=1, U=4 -> 25%
    assert s["per_class_iou"]["class_0"] == pytest.approx(40.0)
    assert s["per_class_iou"]["class_1"] == pytest.approx(25.0)
    assert s["mean_iou"] == pytest.approx(32.5)


def test_absent_class_counts_as_zero_in_the_mean():
    conf = metrics.confusion_matrix(np.array([[0, 0]]), np.array([[0, 0]]), 3).numpy()
    s = metrics.summarize(conf)
    assert s["per_class_iou"] == {"class_0": 100.0, "class_1": 0.0, "class_2": 0.0}
    assert s["mean_iou"] == pytest.approx(100 / 3)


def test_ade_numbering_fix():
    # Raw ADE annotation 0..150 with 0 = other (ignored); train id = raw - 1, 0 -> 255. The author's
    # 1-based prediction 1 + argmax equals raw exactly where the network channel is right.
    raw = np.array([[0, 1, 150, 2]])
    train = np.where(raw == 0, 255, raw - 1)
    channels = np.array([[5, 0, 149, 0]])  # right, right, wrong
    conf = metrics.confusion_matrix(train, channels, 150).numpy()
    assert conf.sum() == 3 and conf[0, 0] == 1 and conf[149, 149] == 1 and conf[1, 0] == 1
    s = metrics.summarize(conf)
    assert s["pixel_accuracy"] == pytest.approx(200 / 3)


def test_out_of_range_label_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError):
        metrics.confusion_matrix(np.array([[3]]), np.array([[0]]), 3)
