"""Parity check of a converted model against the NumPy Caffe reference on a fixed test image.

The two sides take their input in their own conventions (docs/caffe_reference.md §3.3): the Keras model RGB
NHWC 0..255 with the mean subtracted inside, the reference BGR NCHW mean-subtracted. On a failure the
first diverging layer is found by comparing outputs by layer name: first at the block boundaries
(Eltwise, Concat, Interp), then layer by layer inside the first diverging block.
"""

import contextlib
import dataclasses
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from psp_tf.convert import numpy_caffe
from psp_tf.layers import keras_name

MAX_REL_DIFF = 1e-4  # max|logit difference| / std(reference logits)
MIN_AGREEMENT = 0.9999  # fraction of pixels with the same argmax
_CHECKPOINT_TYPES = ("Eltwise", "Concat", "Interp", "Pooling")
_COMPARE_BUDGET_BYTES = 256 << 20  # reference outputs held per Keras sub-model run (a failure stops early)


@dataclasses.dataclass
class VerifyResult:
    """Outcome of `verify`.

    Attributes:
      compared_at: the blob compared ('conv6_interp', or 'conv6' when the file has no final Interp).
      max_abs_diff: max |Keras - reference| over the compared logits.
      logit_std: std of the reference logits.
      rel_diff: max_abs_diff / logit_std.
      agreement: fraction of pixels whose argmax class agrees.
      passed: rel_diff <= 1e-4 and agreement >= 99.99%.
      first_divergence: on failure, the first Caffe layer whose output differs (rel > 1e-4), or None.
      seconds: wall time of the whole check.
    """

    compared_at: str
    max_abs_diff: float
    logit_std: float
    rel_diff: float
    agreement: float
    passed: bool
    first_divergence: Optional[str] = None
    seconds: float = 0.0

    def summary(self):
        status = "PASS" if self.passed else "FAIL"
        text = (f"parity {status} at {self.compared_at}: max|dlogit|/std = {self.rel_diff:.3g} "
                f"(max {self.max_abs_diff:.3g}, std {self.logit_std:.3g}), argmax agreement "
                f"{100 * self.agreement:.4f}%")
        if self.first_divergence:
            text += f"; first diverging layer: {self.first_divergence}"
        return text


@contextlib.contextmanager
def full_float32():
    """Turns TF32 off while comparing, then restores it.

    On Ampere and newer GPUs TF runs float32 convs and matmuls in TF32 (10-bit mantissa) by default,
    which alone exceeds the 1e-4 bar; Caffe computes in full float32.
    """
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)


def fixed_test_image(height, width, seed=0):
    """A fixed, deterministic RGB uint8 [H, W, 3] image: smooth gradients, a few shapes and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                      127.5 + 127.5 * np.sin((x + y) / 23.0)], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.05, 0.25) * min(height, width)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 8, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _rel(keras_nhwc, ref_nchw):
    ref = ref_nchw.transpose(0, 2, 3, 1)
    return float(np.max(np.abs(keras_nhwc - ref)) / max(float(np.std(ref)), 1e-12))


class _Diverged(Exception):
    pass


def _scan(model, layers, inputs, image, names, weights):
    """Runs the reference once, comparing each named layer with the Keras layer of the same name.

    Keras outputs are computed in groups (a sub-model per group) to bound memory. Returns the first
    name with rel > MAX_REL_DIFF, or None.
    """
    names = [n for n in names if keras_name(n) in {l.name for l in model.layers}]
    if not names:
        return None
    pending, held = [], 0
    state = {"first": None}

    def flush():
        if not pending:
            return
        sub = keras.Model(model.inputs, [model.get_layer(keras_name(n)).output for n, _ in pending])
        outs = sub.predict(image[None].astype(np.float32), verbose=0)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for (name, ref), out in zip(pending, outs):
            if _rel(np.asarray(out, np.float32), ref) > MAX_REL_DIFF:
                state["first"] = name
                raise _Diverged()
        pending.clear()

    def callback(name, out):
        nonlocal held
        if name in names:
            pending.append((name, out.copy()))
            held += out.nbytes
            if held > _COMPARE_BUDGET_BYTES or name == names[-1]:
                flush()
                held = 0

    try:
        numpy_caffe.run_net(layers, inputs, [_last_top(layers, names[-1])], weights, callback=callback)
        flush()
    except _Diverged:
        pass
    return state["first"]


def _last_top(layers, name):
    return next(l.tops[0] for l in layers if l.name == name)


def first_divergence(model, layers, inputs, image, weights=None):
    """The first Caffe layer whose output differs from the same-named Keras layer's, or None."""
    order = [layers[i] for i in numpy_caffe.needed_layers(layers, inputs, ["conv6"])]
    checkpoints = [l.name for l in order if l.type in _CHECKPOINT_TYPES] + ["conv6"]
    first = _scan(model, layers, inputs, image, checkpoints, weights)
    if first is None:
        return None
    names = [l.name for l in order]
    end = names.index(first)
    previous = [c for c in checkpoints if names.index(c) < end]
    start = names.index(previous[-1]) + 1 if previous else 0
    return _scan(model, layers, inputs, image, names[start:end + 1], weights) or first


def verify(model, layers, weights=None, input_name="data", seed=0):
    """Compares `model`'s logits with the NumPy reference run of the Caffe `layers`.

    Args:
      model: the converted Keras model (RGB NHWC 0..255 in, logits out).
      layers: CaffeLayer list driving the reference (the caffemodel's, or a prototxt's with `weights`).
      weights: optional {caffe layer name: blobs} when `layers` come without blobs (a prototxt).
      input_name: the reference's input blob.
      seed: test image seed.

    Returns:
      VerifyResult.
    """
    return verify_with_logits(model, layers, weights, input_name, seed)[0]


def verify_with_logits(model, layers, weights=None, input_name="data", seed=0):
    """`verify`, also returning the model's float32 logits [1, H, W, K] on fixed_test_image(crop, seed)
    when the check passed at the final blob (conv6_interp; else None), so a caller that needs the
    model's output on that image (convert's SavedModel check) does not run the network again."""
    with full_float32():
        return _verify(model, layers, weights, input_name, seed, time.time())


def _verify(model, layers, weights, input_name, seed, start):
    config = model.psp_config
    image = fixed_test_image(*config.crop_size, seed=seed)
    inputs = {input_name: numpy_caffe.caffe_input(image, config.mean)}
    tops = {t for layer in layers for t in layer.tops}
    target = "conv6_interp" if "conv6_interp" in tops else "conv6"
    ref = numpy_caffe.run_net(layers, inputs, [target], weights)[target]
    # predict() runs a compiled graph; an eager call of the functional model at 713 holds several GB.
    if target == "conv6_interp":
        out = model.predict(image[None].astype(np.float32), verbose=0)
    else:  # a training-net file without the final Interp: compare the logits before upsampling
        sub = keras.Model(model.inputs, model.get_layer("conv6").output)
        out = sub.predict(image[None].astype(np.float32), verbose=0)
    out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out, np.float32)
    ref_nhwc = ref.transpose(0, 2, 3, 1)
    max_abs = float(np.max(np.abs(out - ref_nhwc)))
    std = float(np.std(ref_nhwc))
    agreement = float(np.mean(out.argmax(-1) == ref_nhwc.argmax(-1)))
    rel = max_abs / max(std, 1e-12)
    passed = rel <= MAX_REL_DIFF and agreement >= MIN_AGREEMENT
    del ref, ref_nhwc
    logits = out if passed and target == "conv6_interp" else None  # not held through the search below
    del out
    diverged = None if passed else first_divergence(model, layers, inputs, image, weights)
    result = VerifyResult(target, max_abs, std, rel, agreement, passed, diverged, time.time() - start)
    return result, logits
