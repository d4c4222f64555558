"""TensorBoard images of the evaluation during training, read back from the event file."""

import types

import numpy as np
import tensorflow as tf

from psp_tf import classes, visualize
from psp_tf.training import summaries
from support.events import read_images


def _dataset(height, width):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
    labels = [np.full((height, width), i % 2, np.uint8) for i in range(3)]
    return types.SimpleNamespace(read=lambda i: (images[i], labels[i]), names=["a", "b", "c"],
                                 palette=classes.VOC2012_PALETTE[:2], class_names=["bg", "fg"])


def test_write_images_reads_back_as_tensorboard_images(tmp_path):
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    writer = tf.summary.create_file_writer(str(tmp_path))
    summaries.write_images(writer, 7, [("eval_images/x", image)])
    summaries.write_images(writer, 9, [("eval_images/x", image[::-1])])
    writer.close()
    found = read_images(str(tmp_path))
    assert [step for step, _ in found["eval_images/x"]] == [7, 9]
    np.testing.assert_array_equal(found["eval_images/x"][0][1], image)
    np.testing.assert_array_equal(found["eval_images/x"][1][1], image[::-1])


def test_eval_panels_keep_the_first_images_shrunk():
    dataset = _dataset(100, 400)
    panels = summaries.EvalPanels(dataset, count=2, max_side=200)
    for index in (2, 0, 1):  # a later image (index >= count) is not kept, whatever the order
        panels(index, np.ones((100, 400), np.int32))
    assert [tag for tag, _ in panels.images] == ["eval_images/00_a", "eval_images/01_b"]
    image, label = dataset.read(0)
    small, small_label, small_pred = summaries.shrink(image, label, np.ones((100, 400), np.int32), 200)
    assert small.shape == (50, 200, 3) and small_label.shape == small_pred.shape == (50, 200)
    want = visualize.show_panel(small, small_label, small_pred, dataset.palette, dataset.class_names)
    np.testing.assert_array_equal(panels.images[0][1], want)
    np.testing.assert_array_equal(want[visualize.TITLE_HEIGHT + 10, 210], dataset.palette[0])  # ground truth


def test_small_images_are_not_enlarged():
    image, label = _dataset(20, 30).read(1)
    out = summaries.shrink(image, label, label, 320)
    assert out[0] is image and out[1] is label
