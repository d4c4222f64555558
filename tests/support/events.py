"""Reading TensorBoard event files back in tests (no tensorboard package needed)."""

import glob
import os


def read_images(directory):
    """{tag: [(step, uint8 [H, W, C])]} of every image summary in the event files under `directory`.

    An image summary is a string tensor [width, height, png, ...] under the "images" plugin (what
    tensorboard's tf.summary.image writes); the stored width and height must match the PNG.
    """
    import tensorflow as tf

    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "images":
                    continue
                width, height, png = tf.make_ndarray(value.tensor)
                image = tf.io.decode_png(png).numpy()
                assert image.shape[:2] == (int(height), int(width)), value.tag
                found.setdefault(value.tag, []).append((event.step, image))
    return found
