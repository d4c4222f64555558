"""The author's protocol as host glue around one compiled device step (psp_tf.evaluation.tile_step).

Source: evaluation/eval_sub.m and scale_process.m (docs/caffe_reference.md §3.2-3.5). Images stream
through: each is resized per scale and cut into tiles on the host (TensorFlow ops of dynamic size),
the tiles of consecutive images and scales fill fixed-size batches for the device, and each tile's
probabilities are added into its image's sums as its batch returns (NumPy, in place, in the float
order of sliding_window.blend_add, so the sums are the same bits). When an image's last scale is
blended, its full-size result is computed on the host in row strips (psp_tf.evaluation.full_size).
Memory: one tile batch, the sums of the (image, scale) pairs in flight and one image's score maps.
"""

import concurrent.futures
import dataclasses
from typing import Any, List, Optional

import numpy as np
import tensorflow as tf

from psp_tf.evaluation import full_size
from psp_tf.evaluation.resize import imresize, scaled_size
from psp_tf.evaluation.sliding_window import make_tiles
from psp_tf.evaluation.tile_step import TileStep


def as_rgb(image):
    """uint8 [H, W] or [H, W, C] (C = 1, 3 or 4) -> [H, W, 3]: grey replicated (as eval_sub.m), alpha dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]


def tile_function(settings):
    """A host tf.function: (uint8 [H, W, 3], float32 long side) -> tiles and their layout.

    Returns:
      callable returning (tiles float32 [n, crop_h, crop_w, 3], row_starts int32 [gh],
      col_starts int32 [gw], scaled (h, w) int32 [2]).
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.float32)],
                 autograph=False)
    def tiles(image, long_side):
        new_h, new_w = scaled_size(tf.shape(image)[0], tf.shape(image)[1], long_side)
        grid, layout = make_tiles(imresize(image, new_h, new_w), settings.crop_size, settings.mean)
        return grid, layout.row_starts, layout.col_starts, tf.stack([new_h, new_w])

    return tiles


def full_size_function(num_scales, num_classes, probabilities):
    """A host tf.function: num_scales score maps [h_s, w_s, K] and the image size -> (labels, probs)."""
    spec = [tf.TensorSpec([None, None, num_classes], tf.float32)] * num_scales
    size = [tf.TensorSpec([], tf.int32)] * 2

    @tf.function(input_signature=[spec, *size], autograph=False)
    def result(scores, height, width):
        labels, probs = full_size.full_size_result(scores, height, width, num_classes, probabilities)
        return (labels, probs) if probabilities else (labels,)

    return result


class _Blend:
    """The running sums of one scaled image's tiles (scale_process.m's data_scale / count_scale)."""

    def __init__(self, row_starts, col_starts, scaled_hw, crop_hw, num_classes):
        self.rows, self.cols = row_starts, col_starts
        self.h, self.w = (int(v) for v in scaled_hw)
        self.crop_h, self.crop_w = crop_hw
        hp, wp = max(self.h, self.crop_h), max(self.w, self.crop_w)
        self.total = np.zeros([hp, wp, num_classes], np.float32)
        self.row = None  # the tile-row buffer, from the second tile row on
        self.count = len(row_starts) * len(col_starts)
        self.done = 0

    def add(self, t, probs):
        """Adds tile t (row-major order) as blend_add does: into its tile row, each full row into the total.

        The first tile row sums straight into the total: those rows of the total hold zeros until its
        row is added, and 0 + x is x exactly, so the result is blend_add's bit for bit without the
        row buffer (a one-row grid, ADE20K's usual, then never allocates, zeroes or copies one).
        """
        gw = len(self.cols)
        r, c0 = t // gw, self.cols[t % gw]
        columns = slice(c0, c0 + self.crop_w)
        if r == 0:
            self.total[self.rows[0]:self.rows[0] + self.crop_h, columns] += probs
        else:
            if self.row is None:
                self.row = np.zeros([self.crop_h, *self.total.shape[1:]], np.float32)
            self.row[:, columns] += probs
            if t % gw == gw - 1:
                r0 = self.rows[r]
                self.total[r0:r0 + self.crop_h] += self.row
                self.row[:] = 0
        self.done += 1

    def finish(self):
        """blend_finish: the sums divided by the count map (outer product of per-axis counts), cropped."""
        row_count = np.zeros(self.total.shape[0], np.float32)
        col_count = np.zeros(self.total.shape[1], np.float32)
        for r0 in self.rows:
            row_count[r0:r0 + self.crop_h] += 1
        for c0 in self.cols:
            col_count[c0:c0 + self.crop_w] += 1
        count = row_count[:self.h, None, None] * col_count[None, :self.w, None]
        # In place: the sums are not needed after, and a second map of this size costs its page faults.
        return np.divide(self.total[:self.h, :self.w], count, out=self.total[:self.h, :self.w])


@dataclasses.dataclass
class _Image:
    """One image in flight: its scales' score maps as they complete."""

    key: Any
    height: int
    width: int
    weights: List[float]  # each scale's share of the image's work (tiles grow with scale²)
    maps: List[Optional[np.ndarray]]
    blends: List[Optional[_Blend]]
    future: Optional[concurrent.futures.Future] = None  # its full-size result, once all scales are blended

    def fraction_done(self):
        done = 0.0
        for s, weight in enumerate(self.weights):
            if self.maps[s] is not None:
                done += weight
            elif self.blends[s] is not None:
                done += weight * self.blends[s].done / self.blends[s].count
        return done


class Engine:
    """The protocol over a stream of images: host resize and tiling, one device step, host blending.

    Args:
      model: PSPNet (built under `strategy.scope()` when a strategy is given).
      settings: protocol.ProtocolSettings.
      strategy: tf.distribute strategy of the device step (None: the current one).
      probabilities: also return the full-size probabilities.
      network: callable batch -> logits used instead of the model (tests).
    """

    def __init__(self, model, settings, strategy=None, probabilities=False, network=None):
        self.settings = settings
        self.num_classes = int(model.output_shape[-1])
        self.step = TileStep(model, settings, strategy, network)
        self.tiles = tile_function(settings)
        self.full_size = full_size_function(len(settings.scales), self.num_classes, probabilities)
        self.probabilities = probabilities

    def run(self, images, on_progress=None):
        """Yields (key, labels int32 [H, W], probabilities float32 [H, W, K] or None) in input order.

        The full-size stage of a finished image runs in a second thread while the next tiles go
        through the device step (on an accelerator it then costs no device time).

        Args:
          images: iterable of (key, uint8 [H, W] or [H, W, C] image).
          on_progress: called as on_progress(images done, counting fractions of those in flight)
            after every device batch.
        """
        run = _Run(on_progress)
        with concurrent.futures.ThreadPoolExecutor(1) as run.pool:
            for key, image in images:
                item = self._start(key, image)
                run.in_flight.append(item)
                for s in range(len(self.settings.scales)):
                    for tile_index, tile in self._scale_tiles(item, s, image):
                        run.pending.append((item, s, tile_index, tile))
                        if len(run.pending) == self.step.batch:
                            self._flush(run)
                            yield from self._finished(run, wait=False)
            if run.pending:
                self._flush(run)
            yield from self._finished(run, wait=True)

    def _start(self, key, image):
        scales = self.settings.scales
        total = sum(s * s for s in scales)
        return _Image(key, image.shape[0], image.shape[1], [s * s / total for s in scales],
                      [None] * len(scales), [None] * len(scales))

    def _scale_tiles(self, item, s, image):
        long_side = np.float32(self.settings.base_size * self.settings.scales[s] + 1)  # eval_sub.m
        tiles, rows, cols, scaled = self.tiles(as_rgb(image), long_side)
        item.blends[s] = _Blend(rows.numpy(), cols.numpy(), scaled.numpy(), self.settings.crop_size,
                                self.num_classes)
        tiles = tiles.numpy()
        return enumerate(tiles)

    def _flush(self, run):
        """One device batch; blends its tiles; hands each image whose scales are all blended to the
        full-size thread."""
        probs = self.step(np.stack([tile for *_, tile in run.pending]))
        for (item, s, t, _), tile_probs in zip(run.pending, probs):
            blend = item.blends[s]
            blend.add(t, tile_probs)
            if blend.done == blend.count:
                item.maps[s], item.blends[s] = blend.finish(), None
        run.pending = []
        for item in run.in_flight:
            if item.future is None and all(m is not None for m in item.maps):
                item.future = run.pool.submit(self.full_size, item.maps, item.height, item.width)
        run.report()

    def _finished(self, run, wait):
        """Yields the results at the head of the queue that are ready (all of them when `wait`)."""
        while run.in_flight and run.in_flight[0].future is not None and (wait or run.in_flight[0].future.done()):
            item = run.in_flight.pop(0)
            outputs = item.future.result()
            run.finished += 1
            yield item.key, outputs[0].numpy(), outputs[1].numpy() if self.probabilities else None
        if wait:
            run.report()


class _Run:
    """The state of one Engine.run: tiles waiting for a batch, images in flight, images done."""

    def __init__(self, on_progress):
        self.on_progress = on_progress
        self.pending, self.in_flight, self.finished, self.pool = [], [], 0, None

    def report(self):
        if self.on_progress is not None:
            self.on_progress(self.finished + sum(item.fraction_done() for item in self.in_flight))
