"""Loads Caffe weights into a psp_tf Keras model strictly by layer name; detects the preset of a file.

Matching is by name, as Caffe's `Net::CopyTrainedLayersFrom` does (src/caffe/net.cpp), but strict
in the manner of big_vision's `merge_params`: every weight layer of the model must be found with the
right blob count and shapes, and one error lists all missing layers, unexpected weight layers and
shape mismatches. File layers that the deploy output does not depend on (an auxiliary head, loss
branches) are training-only: they are skipped and reported. Adapters: conv W [out, in, kh, kw] ->
HWIO; BN [slope, bias, mean, variance] -> Keras [gamma, beta, moving_mean, moving_variance]; the
first conv's input channels reversed so the model takes RGB where the author fed BGR.
"""

import dataclasses
import os
from typing import List, Tuple

import keras
import numpy as np

from psp_tf.convert.netspec import CaffeNet
from psp_tf.convert.numpy_caffe import needed_layers
from psp_tf.errors import UserError
from psp_tf.layers import keras_name
from psp_tf.model import PSPNet

# The deploy network's logits: file layers that this blob does not depend on are training-only.
DEPLOY_OUTPUT = "conv6"
_LIST_LIMIT = 8


@dataclasses.dataclass
class LoadReport:
    """What `load_caffe_weights` did.

    Attributes:
      loaded: Keras layer names that received weights.
      skipped: model layers left untouched because the caller asked (`skip`).
      training_only: Caffe layers with weights in the file that the deploy net does not use.
      bgr_folded_into: the first conv whose input channels were reversed (BGR -> RGB), or None.
    """

    loaded: List[str]
    skipped: List[str]
    training_only: List[str]
    bgr_folded_into: str = None


def _short(items):
    items = list(items)
    extra = f" (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return ", ".join(items[:_LIST_LIMIT]) + extra


def _as_net(source) -> Tuple[CaffeNet, str]:
    from psp_tf.convert.reader import check_finite_blobs, read_caffemodel  # noqa: keeps protobuf off users' import path

    if isinstance(source, (str, os.PathLike)):
        return read_caffemodel(os.fspath(source)), os.fspath(source)  # checked while reading
    net, label = (source, source.name or "the caffemodel") if isinstance(source, CaffeNet) else (
        CaffeNet(name="", layers=list(source)), "the layer list")
    check_finite_blobs(net.layers, label)  # in-memory layers were built without the reader
    return net, label


def deploy_layers(net: CaffeNet) -> set:
    """Names of the file's layers that the deploy logits (`conv6`) depend on."""
    try:
        return {net.layers[i].name for i in needed_layers(net.layers, {"data"}, [DEPLOY_OUTPUT])}
    except ValueError:
        return {layer.name for layer in net.layers}  # no conv6 path: treat every layer as deploy


def _first_conv(model):
    """The conv that reads the image: the first Conv2D in graph order with 3 input channels."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[2] == 3:
            return layer
    return None


def _adapt(layer, blobs, name, bgr, problems):
    """Caffe blobs -> the Keras layer's weight list, or None after recording shape problems."""
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin, cout = layer.kernel.shape
        expected = [(cout, cin, kh, kw)] + ([(cout,)] if layer.use_bias else [])
        # A bias may come in the legacy 4-D layout (1, 1, 1, K): compare element shapes for 1-D blobs.
        got = [tuple(b.shape) if i == 0 else (b.size,) for i, b in enumerate(blobs)]
    elif isinstance(layer, keras.layers.BatchNormalization):
        channels = layer.gamma.shape[0]
        expected = [(1, channels, 1, 1)] * 4
        got = [(1, b.size, 1, 1) if b.ndim != 4 and b.size == channels else tuple(b.shape) for b in blobs]
    else:
        problems.append(f"{name}: model layer type {type(layer).__name__} has no Caffe adapter")
        return None
    if len(blobs) != len(expected):
        problems.append(f"{name}: file has {len(blobs)} blob(s), model needs {len(expected)}")
        return None
    bad = [f"{name} blob {i} file {list(g)} vs model {list(e)}" for i, (g, e) in enumerate(zip(got, expected))
           if g != e]
    if bad:
        problems.extend(bad)
        return None
    if isinstance(layer, keras.layers.BatchNormalization):
        return [b.reshape(-1) for b in blobs]
    kernel = blobs[0].transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> HWIO; both cross-correlate, no flip
    if bgr:
        kernel = kernel[:, :, ::-1, :]  # the author fed BGR; reversing input channels lets the model take RGB
    return [np.ascontiguousarray(kernel)] + ([blobs[1].reshape(-1)] if layer.use_bias else [])


def load_caffe_weights(model, source, skip=(), source_channel_order=None) -> LoadReport:
    """Copies Caffe weights into `model` by layer name, strictly.

    Args:
      model: a Keras model from `psp_tf.build_pspnet` (its layer names are Caffe names via keras_name).
      source: a .caffemodel path, a `CaffeNet`, or a list of `CaffeLayer`.
      skip: Caffe or Keras layer names to leave at their current values (e.g. ('conv6',) when
        fine-tuning on new classes); their file blobs are ignored.
      source_channel_order: 'BGR' or 'RGB' input order of the file's first conv; by default
        `model.psp_config.source_channel_order` (BGR for the author's nets).

    Returns:
      LoadReport.

    Raises:
      UserError: one line listing missing layers, unexpected weight layers and shape mismatches, or
        a `skip` name that matches nothing, or naming a blob with NaN/inf values (in any layer of the
        source, skipped or not). The model is left unchanged.
    """
    net, label = _as_net(source)
    if source_channel_order is None:
        source_channel_order = model.psp_config.source_channel_order if isinstance(model, PSPNet) else "BGR"
    skip = {keras_name(s) for s in skip}
    file_layers = {keras_name(l.name): l for l in net.layers if l.blobs}
    model_layers = {l.name: l for l in model.layers if l.weights}
    unknown_skips = sorted(skip - set(model_layers) - set(file_layers))
    if unknown_skips:  # a typo would otherwise silently load the layer the caller meant to keep
        raise UserError(f"skip names no weight layer of the model or {label}: {', '.join(unknown_skips)}")
    deploy = {keras_name(n) for n in deploy_layers(net)}
    first = _first_conv(model)
    missing = [n for n in model_layers if n not in file_layers and n not in skip]
    unexpected = [file_layers[n].name for n in file_layers
                  if n not in model_layers and n not in skip and n in deploy]
    training_only = [file_layers[n].name for n in file_layers if n not in model_layers and n not in deploy]
    problems, assignments = [], []
    for name, layer in model_layers.items():
        if name in skip or name not in file_layers:
            continue
        bgr = layer is first and source_channel_order == "BGR"
        values = _adapt(layer, file_layers[name].blobs, file_layers[name].name, bgr, problems)
        if values is not None:
            assignments.append((layer, values))
    if missing or unexpected or problems:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} layer(s): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} weight layer(s): {_short(unexpected)}")
        if problems:
            parts.append(f"{len(problems)} shape mismatch(es): {_short(problems)}")
        raise UserError(f"{label} does not fit model {model.name}: " + "; ".join(parts))
    for layer, values in assignments:
        layer.set_weights(values)
    return LoadReport(loaded=[l.name for l, _ in assignments], skipped=sorted(skip & set(model_layers)),
                      training_only=training_only,
                      bgr_folded_into=first.name if first is not None and source_channel_order == "BGR" else None)
