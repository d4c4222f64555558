"""The bounded-memory protocol (tiles blended as they come, full-size result in row strips) against the
full-map computation it replaced (tests/support/full_map_reference.py). The streamed protocol runs its
network step uncompiled here (compiled=False), as the reference does, so that only the blending and the
strips are compared; XLA's rounding is bounded in test_protocol.py. The tiles, network batches and
blend are the reference's bit for bit; the resize back to the image (band matrices per strip against the
reference's taps summed in order on the whole map) is the same linear map in another float32 order, so
the probabilities are held to the bound that float32 allows (resize_bound) and the labels must agree
wherever the reference's top two classes are further apart than twice that. Labels-only and
probabilities runs, and the graph and streamed protocols, run the same strips: equal bit for bit.

Strips are made a few rows high (full_size.STRIP_BYTES patched) so that every image spans several
strips, the last one partial. Images cover: smaller than the crop, odd sizes, tall, wide, several scales
whose resize goes rows-first and cols-first, flip on and off, and tiles of two images in one batch.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from support import full_map_reference as reference
from support.bounds import gamma
from psp_tf.evaluation import full_size, protocol, resize
from support.protocol_cases import smooth_image, tiny_model

pytestmark = pytest.mark.heavy(50)

STRIP_ROWS = 7  # odd: no image height here is a multiple of it, so the last strip is partial


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def short_strips(monkeypatch):
    """Strips of STRIP_ROWS rows for an image `width` pixels wide (the tiny model has K = 4)."""
    def use(width):
        monkeypatch.setattr(full_size, "STRIP_BYTES", STRIP_ROWS * width * 4 * 4)
    return use


# The tiny preset: crop 137, base size 160, stride 92. (shape, scales, flip, batch size); per scale the
# score map's size, its tiles and the order of the resize back to the image ("rows" = rows first).
CASES = {
    # 0.5: 61x81, one tile padded with the exact mean, enlarged cols first; 1.75: 213x281, 2x3 tiles,
    # shrunk (antialiased) rows first.
    "smaller_than_crop_multi_scale": ((90, 119, 3), (0.5, 1.75), True, 3),
    # 0.75: 121x45 (one tile); 1.0: 161x60 (2x1 tiles): tall and narrow, both enlarged rows first.
    "tall_odd": ((323, 121, 3), (0.75, 1.0), True, 2),
    # 1.75: 68x281 (1x3 tiles) shrunk back; 0.6: 24x97 enlarged: wide, without flip.
    "wide_odd_no_flip": ((61, 251, 3), (1.75, 0.6), False, 3),
    # 0.5: 81x73 (cols first); 1.0: 161x144, 2x2 tiles, 2 tiles and their mirrors per batch.
    "both_directions": ((331, 297, 3), (0.5, 1.0), True, 4),
}


# Three traced protocols per case (5-10 s each on 2 cores): slow; the quick run's protocol checks are
# tests/evaluation/test_protocol.py's MATLAB cases.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_labels_and_probabilities_equal_the_full_map_path(model, short_strips, name):
    shape, scales, flip, batch = CASES[name]
    image = smooth_image(shape, seed=len(name))
    short_strips(shape[1])
    assert int(full_size.strip_rows(shape[1], 4)) == STRIP_ROWS
    settings = protocol.settings_for(model, scales, flip, batch_size=batch)
    want_labels, want_probs = reference.predict(model, image, settings)
    full = protocol.predict(model, image, scales, flip, batch_size=batch, compiled=False)
    labels_only = protocol.predict(model, image, scales, flip, batch_size=batch, probabilities=False,
                                   compiled=False)
    assert labels_only.probabilities is None
    np.testing.assert_array_equal(labels_only.labels, full.labels)  # the same strips: bit for bit
    assert full.probabilities.dtype == np.float32
    bound = resize_bound(shape, settings, 4)
    np.testing.assert_allclose(full.probabilities, want_probs, rtol=0, atol=bound)
    assert_labels_agree(full.labels, want_labels, want_probs, bound)
    assert len(np.unique(want_labels)) > 1  # a fixture that can tell labels apart


def resize_bound(shape, settings, num_classes):
    """Max |Δprob| between the strips' band-matrix resize and the reference's tap loop, same score maps.

    Per evaluation, against the exact values (u = 2^-24, gamma_n(u) = n u / (1 - n u)): a resize pass
    sums at most P nonzero products of float32-rounded weights >= 0 and scores >= 0, in some order, so
    its result is within gamma_{P+1}(u) of the exact value *relative to that value* (the terms are
    nonnegative: sum |w x| is the value); both passes: gamma_{Pr+Pc+2}(u). Renormalising divides such a
    value by the float32 sum of K of them: relative gamma_{2(Pr+Pc+2)+K}(u) with the divide. The scale
    average sums S of those and divides: + S + 1 roundings. Probabilities are <= 1, so that relative
    bound is absolute, and two evaluations differ by at most twice it: 2 gamma_n(u) <= gamma_n(2u),
    which is bounds.gamma(n) (eps = 2u). P counts every tap of contributions (zero weights included).
    """
    height, width = shape[:2]
    widest = 0
    for scale in settings.scales:
        h, w = (int(v) for v in resize.scaled_size(height, width, settings.base_size * scale + 1))
        taps = [int(resize.contributions(n, m)[0].shape[1]) for n, m in ((h, height), (w, width))]
        widest = max(widest, sum(taps))
    n = len(settings.scales)
    return gamma(2 * (widest + 2) + num_classes + n + 1)


def assert_labels_agree(labels, want_labels, want_probs, bound):
    """Labels equal wherever the reference's top two probabilities are further apart than 2·bound."""
    top2 = np.sort(want_probs, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    assert decided.mean() > 0.5, decided.mean()  # a fixture where the check is not vacuous
    np.testing.assert_array_equal(labels[decided], want_labels[decided])


@pytest.mark.slow
def test_tiles_of_several_images_share_batches(model, short_strips):
    # The evaluator's grouping: both images' tiles in one batch sequence, routed to their own sums.
    images = [smooth_image((100, 200, 3), 1), smooth_image((150, 143, 3), 2)]
    short_strips(143)
    settings = protocol.settings_for(model, (1.0, 0.75), True, batch_size=4)  # 2 tiles + mirrors a batch
    spec = [tf.TensorSpec([None, None, 3], tf.uint8)] * 2

    def run(graph, **kwargs):
        fn = tf.function(lambda a, b: [[t for t in r if t is not None] for r in graph(model, [a, b], settings,
                                                                                        **kwargs)],
                         input_signature=spec, autograph=False)
        return [[t.numpy() for t in r] for r in fn(*[tf.constant(im) for im in images])]

    got = run(protocol.protocol_graph, probabilities=False)
    want = run(reference.protocol_graph)
    # The streamed protocol: both images in one predict call, their tiles filling the same batches.
    streamed = protocol.predict(model, images, (1.0, 0.75), True, batch_size=4, probabilities=False,
                                compiled=False)
    for image, (g,), s, (want_labels, want_probs) in zip(images, got, streamed, want):
        np.testing.assert_array_equal(s.labels, g)  # the same blend bits and strips
        assert_labels_agree(g, want_labels, want_probs, resize_bound(image.shape, settings, 4))


def test_strip_rows_bound_one_strip():
    # PSPNet50/ADE20K on a 4000-wide photo: one [rows, 4000, 150] float32 strip within STRIP_BYTES.
    rows = int(full_size.strip_rows(4000, 150))
    assert rows * 4000 * 150 * 4 <= full_size.STRIP_BYTES < (rows + 1) * 4000 * 150 * 4
    assert int(full_size.strip_rows(10 ** 6, 1000)) == 1  # a row larger than the budget: one row
    assert int(full_size.strip_rows(1, 1)) == full_size.STRIP_BYTES // 4  # int64: no overflow


_MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import keras, psp_tf
    from psp_tf.evaluation import protocol
    keras.utils.set_random_seed(0)
    model = psp_tf.build_pspnet("tiny", num_classes=400)
    height, width = 600, 800
    protocol.predict(model, np.zeros((40, width, 3), np.uint8), probabilities=False)  # trace
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = protocol.predict(model, image, probabilities=False).labels
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_bytes": (after - before) * 1024, "shape": list(labels.shape)}))
""")


@pytest.mark.slow  # a process of its own
def test_labels_only_never_holds_a_full_size_map():
    # K = 400 on 600x800: one [H, W, K] float32 map is 768 MB, the whole network work a few MB. The
    # peak RSS of the labels-only call may grow by less than half that map: reintroducing a single
    # full-size map (the full-map path holds several) fails. Bytes, not time; in a fresh process.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["shape"] == [600, 800]
    full_map = 600 * 800 * 400 * 4
    assert report["growth_bytes"] < full_map / 2, report
