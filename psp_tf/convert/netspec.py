"""Caffe layers as plain Python records, with Caffe's rules for reading each layer's parameters.

A `CaffeLayer` holds what the converter and the NumPy reference need from one LayerParameter:
name, type, bottoms, tops, the weight blobs as float32 arrays, and the layer's parameters resolved
the way Caffe's `LayerSetUp` resolves them (kernel_h/kernel_w over kernel_size, default pad 0,
stride 1, dilation 1, ...). Records hold no protobuf objects, so the parsed file can be freed.
Sources: src/caffe/layers/{base_conv,pooling,interp,bn,eltwise,concat}_layer.cpp, blob.cpp.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np


class BlobError(ValueError):
    """A blob whose value count does not match its shape (a corrupt file)."""


@dataclasses.dataclass
class CaffeLayer:
    """One Caffe layer: identity, graph edges, weights and resolved parameters.

    Attributes:
      name: the Caffe layer name, e.g. 'conv1_1_3x3_s2/bn'.
      type: the layer type string, e.g. 'Convolution', 'BN', 'Interp'.
      bottoms: input blob names.
      tops: output blob names (equal to bottoms for in-place layers).
      blobs: weight arrays, float32, in Caffe's shapes (conv W [out, in, kh, kw]).
      params: resolved parameters for the types the NumPy reference runs (see `resolve_params`).
    """

    name: str
    type: str
    bottoms: List[str]
    tops: List[str]
    blobs: List[np.ndarray] = dataclasses.field(default_factory=list)
    params: Dict = dataclasses.field(default_factory=dict)


def blob_to_array(blob) -> np.ndarray:
    """Decodes a BlobProto like Caffe's `Blob::FromProto`.

    The legacy 4-D fields (num, channels, height, width) win when any of them is set, else
    `shape.dim`; values come from `double_data` when it is non-empty, else `data`.

    Returns:
      float32 array of the blob's shape.

    Raises:
      BlobError: the value count does not match the shape.
    """
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    # np.array on upb's repeated container copies in C (65M floats in about 0.2 s).
    if any(int(d) < 0 for d in shape):
        raise BlobError(f"has a negative dimension in its shape {shape}")
    values = np.array(blob.double_data, np.float64) if len(blob.double_data) else np.array(blob.data, np.float32)
    count = 1
    for d in shape:  # Python ints: a corrupt shape's product must not wrap around as int64 would
        count *= int(d)
    if values.size != count:
        raise BlobError(f"holds {values.size} values but its shape {shape} needs {count}")
    with np.errstate(over="ignore"):  # a double beyond float32 becomes inf, which the reader refuses
        return values.astype(np.float32, copy=False).reshape(shape)


def _pair(repeated, h, w, has_h, default):
    """Caffe's rule for kernel/pad/stride/dilation: explicit _h/_w fields win, else the repeated value."""
    if has_h:
        return (int(h), int(w))
    values = list(repeated)
    if not values:
        return (default, default)
    return (int(values[0]), int(values[-1]))  # one value = both dims; two values = (h, w)


def _conv_params(p):
    return {
        "num_output": int(p.num_output),
        "bias_term": bool(p.bias_term),
        "kernel": _pair(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 1),
        "stride": _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1),
        "pad": _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), 0),
        "dilation": _pair(p.dilation, 0, 0, False, 1),
        "group": int(p.group),
    }


def _pool_params(p):
    kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size, p.kernel_size)
    stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
    method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}[p.pool]
    return {"method": method, "kernel": tuple(map(int, kernel)), "stride": tuple(map(int, stride)),
            "pad": tuple(map(int, pad)), "global_pooling": bool(p.global_pooling)}


def _interp_params(p):
    return {"height": int(p.height), "width": int(p.width), "zoom_factor": int(p.zoom_factor),
            "shrink_factor": int(p.shrink_factor), "pad_beg": int(p.pad_beg), "pad_end": int(p.pad_end),
            "has_zoom": p.HasField("zoom_factor"), "has_shrink": p.HasField("shrink_factor"),
            "has_height": p.HasField("height"), "has_width": p.HasField("width")}


def resolve_params(layer) -> Dict:
    """The parameters of a LayerParameter that the NumPy reference needs, resolved with Caffe's defaults."""
    t = layer.type
    if t == "Convolution":
        return _conv_params(layer.convolution_param)
    if t == "Pooling":
        return _pool_params(layer.pooling_param)
    if t == "Interp":
        return _interp_params(layer.interp_param)
    if t == "BN":
        return {"eps": float(layer.bn_param.eps)}
    if t == "ReLU":
        return {"negative_slope": float(layer.relu_param.negative_slope)}
    if t == "Eltwise":
        p = layer.eltwise_param
        return {"operation": {0: "PROD", 1: "SUM", 2: "MAX"}[p.operation], "coeff": [float(c) for c in p.coeff]}
    if t == "Concat":
        p = layer.concat_param
        # concat_layer.cpp: the legacy concat_dim wins when set, else axis (default 1 = channels).
        return {"axis": int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis)}
    if t == "Dropout":
        return {"dropout_ratio": float(layer.dropout_param.dropout_ratio)}
    return {}


def layer_from_proto(layer, with_blobs=True) -> CaffeLayer:
    """Converts one LayerParameter into a CaffeLayer (blobs decoded when `with_blobs`).

    Raises:
      BlobError: a blob is corrupt; the message names the layer and the blob index.
    """
    blobs = []
    if with_blobs:
        for i, blob in enumerate(layer.blobs):
            try:
                blobs.append(blob_to_array(blob))
            except BlobError as e:
                raise BlobError(f"layer {layer.name!r} blob {i} {e}") from None
    return CaffeLayer(name=layer.name, type=layer.type, bottoms=list(layer.bottom), tops=list(layer.top),
                      blobs=blobs, params=resolve_params(layer))


@dataclasses.dataclass
class CaffeNet:
    """An ordered layer list plus the declared input (if the file declares one).

    Attributes:
      name: NetParameter.name ('' when unset).
      layers: the layers in file order.
      input_name: the declared input blob ('data' in the deploy prototxts), or None.
      input_shape: its declared NCHW shape, or None (trained caffemodels usually declare none).
    """

    name: str
    layers: List[CaffeLayer]
    input_name: Optional[str] = None
    input_shape: Optional[Tuple[int, int, int, int]] = None

    def by_name(self) -> Dict[str, CaffeLayer]:
        return {layer.name: layer for layer in self.layers}


def declared_input(net):
    """(input name, NCHW shape) from NetParameter's `input` + `input_dim` / `input_shape`, or (None, None)."""
    if not len(net.input):
        return None, None
    if len(net.input_dim):
        # Caffe's legacy form gives four input_dim per input; any other count is returned whole so
        # that the caller's shape check names it instead of the shape going unchecked.
        dims = tuple(int(d) for d in net.input_dim)
        return net.input[0], dims[:4] if len(dims) % 4 == 0 else dims
    if len(net.input_shape):
        return net.input[0], tuple(int(d) for d in net.input_shape[0].dim)
    return net.input[0], None
