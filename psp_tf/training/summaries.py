"""TensorBoard images of the evaluation inside a training run: the same few validation images at
every evaluation, with their ground truth and prediction (psp_tf.visualize.show_panel), so a run can
be watched and not only its scalars."""

import cv2
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from psp_tf import visualize

EVAL_IMAGES = 4  # the first images of the evaluation split: the same ones at every evaluation
MAX_SIDE = 320  # each panel cell's long side, so that an event file stays small (~100 kB a panel)
TAG_PREFIX = "eval_images"

# What tensorboard's tf.summary.image writes (plugin "images", a blob sequence [width, height, png]),
# without needing the tensorboard package in the training process (tf.summary.image imports it).
_IMAGE_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def shrink(image, label, prediction, max_side=MAX_SIDE):
    """The three maps resized so that the long side is at most `max_side` (labels: nearest)."""
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return image, label, prediction
    size = (max(1, round(width * factor)), max(1, round(height * factor)))

    def nearest(labels):
        return None if labels is None else cv2.resize(np.asarray(labels, np.uint8), size,
                                                      interpolation=cv2.INTER_NEAREST)

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), nearest(label), nearest(prediction)


class EvalPanels:
    """An `on_prediction(index, prediction)` callback for psp_tf.evaluation.evaluator.evaluate that
    keeps a show_panel of each of the first `count` images of `dataset`.

    `images` is then [(tag, uint8 [H, W, 3])], the tag naming the image; under several workers only
    the chief's share of those images is seen.
    """

    def __init__(self, dataset, count=EVAL_IMAGES, max_side=MAX_SIDE):
        self.dataset, self.count, self.max_side = dataset, count, max_side
        self.images = []

    def __call__(self, index, prediction):
        if index >= self.count:
            return
        image, label = self.dataset.read(index)
        image, label, prediction = shrink(image, label, prediction, self.max_side)
        panel = visualize.show_panel(image, label, prediction, self.dataset.palette, self.dataset.class_names)
        self.images.append((f"{TAG_PREFIX}/{index:02d}_{self.dataset.names[index]}", panel))


def write_images(writer, step, images):
    """Writes each (tag, uint8 [H, W, 3] RGB) as a TensorBoard image at `step`, and flushes."""
    with writer.as_default(step=int(step)):
        for tag, image in images:
            image = np.asarray(image, np.uint8)
            png = tf.io.encode_png(image)
            tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
            tf.summary.write(tag, tensor, metadata=_IMAGE_METADATA)
    writer.flush()
