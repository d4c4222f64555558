"""The protocol as it was before the strip path: full-size [H, W, K] maps per scale, segment-sum blend.

Kept verbatim (from psp_tf/evaluation/protocol.py and sliding_window.py before the change, and the
tap-by-tap float resize before the band matrices, resize.tap_resize) as the reference of the bounded-memory
code: the same tiles, network batches and blend in the same float order (equal bit for bit), the same
exact resize in another float order (within float32 rounding). Only for tests; it holds several
[H, W, K] float32 maps.
"""

import tensorflow as tf

from psp_tf.evaluation.protocol import network_function
from psp_tf.evaluation.resize import imresize, resize_plan, scaled_size, tap_resize
from psp_tf.evaluation.sliding_window import make_tiles, merge_flip


def tap_imresize(x, out_height, out_width):
    """The float imresize before the band matrices: taps summed in order, imresize.m's dimension order."""
    return tap_resize(x, resize_plan(tf.shape(x)[0], tf.shape(x)[1], out_height, out_width, bands=False),
                      round_uint8=False)


def blend(probs, layout):
    """The segment-sum blend: columns, then rows, then the count map."""
    gh, gw = tf.shape(layout.row_starts)[0], tf.shape(layout.col_starts)[0]
    ch, cw, k = tf.shape(probs)[1], tf.shape(probs)[2], tf.shape(probs)[3]
    hp, wp = layout.padded_hw
    row_ids = tf.reshape(layout.row_starts[:, None] + tf.range(ch)[None, :], [-1])
    col_ids = tf.reshape(layout.col_starts[:, None] + tf.range(cw)[None, :], [-1])
    grid = tf.reshape(probs, [gh, gw, ch, cw, k])
    by_col = tf.reshape(tf.transpose(grid, [1, 3, 0, 2, 4]), [gw * cw, gh, ch, k])
    summed = tf.math.unsorted_segment_sum(by_col, col_ids, wp)  # [wp, gh, ch, K]
    by_row = tf.reshape(tf.transpose(summed, [1, 2, 0, 3]), [gh * ch, wp, k])
    summed = tf.math.unsorted_segment_sum(by_row, row_ids, hp)  # [hp, wp, K]
    row_count = tf.math.unsorted_segment_sum(tf.ones_like(row_ids, tf.float32), row_ids, hp)
    col_count = tf.math.unsorted_segment_sum(tf.ones_like(col_ids, tf.float32), col_ids, wp)
    h, w = layout.image_hw
    count = row_count[:h, None, None] * col_count[None, :w, None]
    return summed[:h, :w] / count


def run_network(model, tiles, flip, batch_size):
    """Per-tile probabilities [n, h, w, K], the same network batches as the library."""
    per_batch = max(1, batch_size // 2) if flip else batch_size
    network = network_function(model)
    n = tf.shape(tiles)[0]
    steps = (n + per_batch - 1) // per_batch
    out = tf.TensorArray(tf.float32, size=steps, infer_shape=False)

    def body(i, out):
        x = tiles[i * per_batch: (i + 1) * per_batch]
        if flip:
            x = tf.reshape(tf.stack([x, tf.reverse(x, axis=[2])], axis=1),
                           tf.concat([[-1], tf.shape(x)[1:]], axis=0))
        return i + 1, out.write(i, merge_flip(network(x), flip))

    _, out = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), out))
    return out.concat()


def protocol_graph(model, images, settings):
    """list of (labels int32 [H_i, W_i], probabilities float32 [H_i, W_i, K]) for uint8 RGB images."""
    sums = [None] * len(images)
    for scale in settings.scales:
        long_side = settings.base_size * scale + 1
        tiles, layouts = [], []
        for image in images:
            new_h, new_w = scaled_size(tf.shape(image)[0], tf.shape(image)[1], long_side)
            t, layout = make_tiles(imresize(image, new_h, new_w), settings.crop_size, settings.mean)
            tiles.append(t)
            layouts.append(layout)
        counts = [tf.shape(t)[0] for t in tiles]
        probs = run_network(model, tf.concat(tiles, axis=0), settings.flip, settings.batch_size)
        for i, (part, layout) in enumerate(zip(tf.split(probs, counts), layouts)):
            score = blend(part, layout)
            score = tap_imresize(score, tf.shape(images[i])[0], tf.shape(images[i])[1])
            score = score / tf.reduce_sum(score, axis=-1, keepdims=True)
            sums[i] = score if sums[i] is None else sums[i] + score
    results = []
    for total in sums:
        probs = total / float(len(settings.scales))
        results.append((tf.argmax(probs, axis=-1, output_type=tf.int32), probs))
    return results


def predict(model, image, settings):
    """(labels, probabilities) numpy arrays for one uint8 RGB [H, W, 3] image, traced as the library is."""
    fn = tf.function(lambda im: protocol_graph(model, [im], settings)[0],
                     input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)], autograph=False)
    labels, probs = fn(tf.constant(image))
    return labels.numpy(), probs.numpy()
