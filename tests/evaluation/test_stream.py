"""The protocol as host glue around one static-shape device step (stream.Engine, tile_step).

The device step must be one XLA program of fixed shape (what TPUStrategy needs), proven here by
compiling it with XLA on the CPU; the host glue must fill batches with the tiles of several images,
pad only the last one and drop its padding, and report progress within an image.
"""

import numpy as np
import pytest
import tensorflow as tf

from psp_tf.evaluation import protocol, stream, tile_step
from support.protocol_cases import smooth_image, tiny_model

# Ops that would run on the host (Python callbacks, host-side I/O) inside a device function.
HOST_OPS = {"PyFunc", "EagerPyFunc", "PyFuncStateless", "ReadFile", "WriteFile", "PrintV2", "StringFormat"}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _op_types(graph_def):
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


@pytest.mark.slow
def test_device_step_compiles_with_xla_and_has_static_shapes(model):
    settings = protocol.settings_for(model, batch_size=4, compiled=True)  # 2 tiles + their mirrors a step
    step = tile_step.replica_function(model, settings)
    tiles = tf.zeros([2, *settings.crop_size, 3])
    hlo = step.experimental_get_compiler_ir(tiles)(stage="hlo")  # fails if any op has no XLA kernel
    assert "ENTRY" in hlo
    concrete = step.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [2, *settings.crop_size, 4]
    assert not _op_types(concrete.graph.as_graph_def()) & HOST_OPS
    # What XLA computes is the network's merged-flip softmax (sums to 1 per pixel).
    probs = step(tf.random.uniform([2, *settings.crop_size, 3], 0, 255)).numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def _pixelwise_network(x):
    """A stand-in network whose result for a tile does not depend on the batch around it (elementwise
    ops only), so batching can be compared bit for bit: K = 4 logits from the RGB values."""
    r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
    return tf.concat([r * 0.01, g * 0.01, b * 0.01, (r - b) * 0.005], axis=-1)


def test_tiles_of_several_images_fill_batches_and_padding_is_dropped(model):
    settings = protocol.settings_for(model, scales=(0.5, 1.0), batch_size=6, compiled=False)  # 3 tiles a step
    images = [smooth_image((150, 170, 3), 1), smooth_image((90, 200), 2), smooth_image((300, 120, 3), 3)]
    engine = stream.Engine(model, settings, probabilities=True, network=_pixelwise_network)
    calls = []
    step = engine.step
    engine.step = type("Counting", (), {"batch": step.batch,
                                        "__call__": lambda self, t: calls.append(len(t)) or step(t)})()
    progress = []
    together = list(engine.run(enumerate(images), on_progress=progress.append))
    # Tiles at scales 0.5 + 1.0 (tiny: crop 137, long side 81 / 161): 1 + 2x2, 1 + 1x2, 1 + 2x1 = 11,
    # in batches of 3 across image boundaries; only the last batch is short (padded on the device).
    assert calls == [3, 3, 3, 2]
    assert [key for key, *_ in together] == [0, 1, 2]
    for (_, labels, probs), image in zip(together, images):
        _, want_labels, want_probs = next(engine.run([(0, image)]))
        assert labels.shape == image.shape[:2] and probs.shape == image.shape[:2] + (4,)
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(probs, want_probs)
    # Progress counts images with the share of those in flight: it moves within an image.
    assert progress == sorted(progress) and progress[-1] == 3
    assert any(0 < p % 1 for p in progress)


def test_predict_takes_a_list_of_images(model):
    images = [smooth_image((100, 200, 3), 4), smooth_image((60, 50), 5)]
    results = protocol.predict(model, images, batch_size=4, probabilities=False)
    assert [r.labels.shape for r in results] == [(100, 200), (60, 50)]
    assert all(r.probabilities is None for r in results)
    single = protocol.predict(model, images[1], batch_size=4, probabilities=False)
    assert single.labels.shape == (60, 50)


def _blend_add_in_order(rows, cols, scaled_hw, crop, tiles):
    """blend_add as the author's loop orders it, in float32: each tile into its tile row's buffer, each
    full row into the total, then the sums over the count map, cropped to the scaled size."""
    h, w = scaled_hw
    k = tiles[0].shape[-1]
    total = np.zeros([max(h, crop), max(w, crop), k], np.float32)
    count = np.zeros(total.shape[:2] + (1,), np.float32)
    for r, r0 in enumerate(rows):
        row = np.zeros([crop, total.shape[1], k], np.float32)
        for c, c0 in enumerate(cols):
            row[:, c0:c0 + crop] += tiles[r * len(cols) + c]
            count[r0:r0 + crop, c0:c0 + crop] += 1
        total[r0:r0 + crop] += row
    return (total / count)[:h, :w]


@pytest.mark.parametrize("rows,cols,scaled_hw", [([0], [0], (12, 10)), ([0], [0, 9, 18], (14, 34)),
                                                  ([0, 7], [0, 6], (23, 22)), ([0, 5, 10], [0, 8], (26, 24))])
def test_blend_is_the_author_order_bit_for_bit(rows, cols, scaled_hw):
    # Grids as tiling makes them (the last tile ends at max(size, crop); a smaller map is padded). One-row
    # grids skip the row buffer (0 + x is x exactly); later rows use it. Up to four tiles overlap, so
    # another order of the float32 adds would show in the last bits.
    crop, k = 16, 5
    rng = np.random.default_rng(len(rows) * 10 + len(cols))
    tiles = [rng.random((crop, crop, k)).astype(np.float32) for _ in range(len(rows) * len(cols))]
    blend = stream._Blend(np.array(rows), np.array(cols), scaled_hw, (crop, crop), k)
    for t, tile in enumerate(tiles):
        blend.add(t, tile)
    assert blend.done == blend.count == len(tiles)
    np.testing.assert_array_equal(blend.finish(), _blend_add_in_order(rows, cols, scaled_hw, crop, tiles))
