"""What a user sees during training: a progress line (step, loss, lr, img/s, ETA), the evaluation's
progress (images, ETA) and TensorBoard."""

import math
import sys
import time

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# The metadata tf.summary.scalar writes, without needing the tensorboard package installed.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)


def format_duration(seconds):
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress bar on a terminal; a line every `every` steps otherwise (logs, CI).

    Speed excludes the first step of a process (graph tracing) so the ETA is not skewed by it.
    """

    def __init__(self, total_steps, global_batch, start_step=0, stream=None, every=None, enabled=True):
        self.total, self.batch, self.enabled = total_steps, global_batch, enabled
        self.stream = stream or sys.stdout
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.every = every or max(1, total_steps // 40)
        self.first_step, self.t0, self.timed_steps = start_step, None, 0
        self.eval_t0, self.eval_first, self.eval_done = None, 0, 0

    def update(self, step, loss, lr):
        """Reports that `step` (1-based, steps done) finished with `loss` at learning rate `lr`."""
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.first_step = now, step
        speed = (step - self.first_step) * self.batch / (now - self.t0) if step > self.first_step else 0.0
        self.speed = speed
        if not self.enabled or not (self.tty or step % self.every == 0 or step == self.total):
            return
        eta = (self.total - step) * self.batch / speed if speed > 0 else math.nan
        width = 24
        filled = int(width * step / self.total)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total}  loss {loss:.4f}  "
                f"lr {lr:.3g}  {speed:.1f} img/s  ETA {format_duration(eta) if speed > 0 else '?'}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and step == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def countdown(self, done, total):
        """Reports that `done` of `total` evaluation images are scored (evaluator's on_progress)."""
        now = time.perf_counter()
        if self.eval_t0 is None or done <= self.eval_done:  # a new evaluation: time from its first step
            self.eval_t0, self.eval_first = now, done
        self.eval_done = done
        if not self.enabled or not (self.tty or done % max(1, total // 10) == 0 or done == total):
            return
        rate = (done - self.eval_first) / (now - self.eval_t0) if done > self.eval_first else 0.0
        eta = format_duration((total - done) / rate) if rate > 0 else "?"
        line = f"evaluating: {done}/{total} images  ETA {eta}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done == total:
            self.stream.write("\n")
        self.stream.flush()

    def message(self, text):
        if self.enabled:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()


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
