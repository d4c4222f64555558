"""TensorBoard scalars of a training run, written without needing the tensorboard package."""

import math

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# The metadata tf.summary.scalar writes, without needing the tensorboard package installed.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)


class Scalars:
    """TensorBoard scalars under `<workdir>/tensorboard` (chief only; a no-op elsewhere)."""

    def __init__(self, logdir, enabled=True):
        self.writer = tf.summary.create_file_writer(logdir) if enabled else None

    def write(self, step, values):
        """Writes finite scalars only: a diverged step must not leave NaN in the logs."""
        if self.writer is None:
            return
        with self.writer.as_default(step=int(step)):
            for name, value in values.items():
                if value is not None and math.isfinite(float(value)):
                    tf.summary.write(name, tf.constant(float(value), tf.float32), metadata=_SCALAR_METADATA)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
