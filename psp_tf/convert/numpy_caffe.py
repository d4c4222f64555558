"""An independent NumPy implementation of the Caffe layers PSPNet uses, driven by a Caffe layer list.

Written from Caffe's definitions (docs/caffe_reference.md §2; src/caffe/layers/*.cpp of the
author's fork), never from the Keras model, so that it can judge the converted model. Blobs are
NCHW float32 as in Caffe. Layers: Convolution (pad/stride/dilation, group 1), BN (4 blobs), ReLU,
Pooling MAX/AVE (ceil rule, AVE divisor counting padding), Eltwise, Concat, Interp (all size cases,
Caffe's float32 sampling), Dropout (identity at TEST).
"""

import numpy as np


def caffe_input(image_rgb, mean_rgb):
    """The network input exactly as evaluation/pre_img.m builds it (docs/caffe_reference.md §3.3).

    Args:
      image_rgb: [H, W, 3] RGB image, 0..255 (uint8 or float).
      mean_rgb: (R, G, B) mean.

    Returns:
      float32 [1, 3, H, W], BGR, mean-subtracted, no std division.
    """
    # MATLAB: single(im) - im_mean, with the double mean converted to single.
    x = np.asarray(image_rgb, np.float32) - np.asarray(mean_rgb, np.float32)
    return np.ascontiguousarray(x[:, :, ::-1].transpose(2, 0, 1)[None])


def conv_output_size(size, kernel, stride, pad, dilation):
    """conv_layer.cpp compute_output_shape: floor division."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def convolution(x, weight, bias, stride=(1, 1), pad=(0, 0), dilation=(1, 1)):
    """Caffe Convolution (cross-correlation, group 1).

    Caffe computes im2col + one GEMM; here the same sum over (channel, ki, kj) is split into one
    GEMM per kernel offset, which needs no [C*kh*kw, Ho*Wo] column buffer (1.2 GB for conv5_4 at 713).
    At stride 1 each offset's GEMM reads the padded input in place: output pixel (r, c) of offset
    (i, j) is padded pixel (r + i*dh, c + j*dw), so over the flattened padded image the offset's
    inputs are one run of Ho rows of the padded width Wp, a strided [C, Ho*Wp] view BLAS takes as
    it is. The Wp - Wo columns past each row's end are computed and dropped (2-13% more products
    for PSPNet's dilated 3x3s); copying a [C, Ho*Wo] patch per offset cost more than the GEMMs did.
    Each output is the same sum either way: the offsets in order, each a C-term BLAS dot product.

    Args:
      x: [N, C, H, W] float32.
      weight: [O, C, kh, kw].
      bias: [O] or None.

    Returns:
      [N, O, Ho, Wo] float32.
    """
    n, c, h, w = x.shape
    o, c_w, kh, kw = weight.shape
    if c_w != c:
        raise ValueError(f"convolution weight expects {c_w} input channels, input has {c} (group > 1 unsupported)")
    ho = conv_output_size(h, kh, stride[0], pad[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], pad[1], dilation[1])
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1]))) if any(pad) else x
    xp = np.ascontiguousarray(xp)
    hp, wp = xp.shape[2:]
    in_place = tuple(stride) == (1, 1)
    width = wp if in_place else wo  # the output rows' stored width (in place: the padded one)
    out = np.zeros((n, o, ho * width), np.float32)
    flat = xp.reshape(n, c, hp * wp)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            w_ij = np.ascontiguousarray(weight[:, :, i, j])
            for b in range(n):
                if in_place:
                    start = r0 * wp + c0
                    # The last row needs only wo columns; the run stops inside the padded image.
                    cols = flat[b, :, start:start + (ho - 1) * wp + wo]
                    out[b, :, :cols.shape[1]] += w_ij @ cols
                else:
                    patch = xp[b, :, r0:r0 + stride[0] * (ho - 1) + 1:stride[0],
                               c0:c0 + stride[1] * (wo - 1) + 1:stride[1]]
                    out[b] += w_ij @ patch.reshape(c, ho * wo)
    out = np.ascontiguousarray(out.reshape(n, o, ho, width)[:, :, :, :wo])
    if bias is not None:
        out += bias.reshape(1, o, 1, 1)
    return out


def batch_norm(x, slope, bias, mean, var, eps=1e-5):
    """The fork's BN layer at TEST (bn_layer.cpp): slope * (x - mean) / sqrt(var + eps) + bias.

    All four blobs are [1, C, 1, 1]; the operations follow BNLayer::Forward_cpu's order in float32.
    """
    inv_std = np.power(var.astype(np.float32) + np.float32(eps), np.float32(-0.5))
    out = x - mean  # then in place: the same float32 operations in the same order, one buffer
    out *= inv_std
    out *= slope
    out += bias
    return out


def relu(x, negative_slope=0.0):
    """Caffe ReLU: max(x, 0) + negative_slope * min(x, 0)."""
    if negative_slope:
        return np.where(x > 0, x, x * np.float32(negative_slope))
    return np.maximum(x, np.float32(0))


def pool_output_size(size, kernel, stride, pad):
    """pooling_layer.cpp Reshape: ceil mode, then drop a last window that starts in the padding."""
    pooled = int(np.ceil(float(size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _pool_axis_sizes(size, kernel, stride, pad, pooled):
    """Per-output-position AVE window extent along one axis, counting padding inside size + pad."""
    start = np.arange(pooled) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    return end - start


def pooling(x, method, kernel, stride=(1, 1), pad=(0, 0)):
    """Caffe Pooling, MAX or AVE, with Caffe's ceil output size.

    MAX windows are clipped to the image (padding never wins: -inf fill). AVE sums real pixels only
    and divides by the window size clipped to H + pad, so padded cells inside it count.

    Args:
      x: [N, C, H, W] float32.

    Returns:
      [N, C, Ho, Wo] float32.
    """
    n, c, h, w = x.shape
    ho = pool_output_size(h, kernel[0], stride[0], pad[0])
    wo = pool_output_size(w, kernel[1], stride[1], pad[1])
    # Pad the top/left by `pad` and the bottom/right far enough for the last (ceil-mode) window.
    bottom = max((ho - 1) * stride[0] + kernel[0] - h - pad[0], 0)
    right = max((wo - 1) * stride[1] + kernel[1] - w - pad[1], 0)
    fill = -np.inf if method == "MAX" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], bottom), (pad[1], right)), constant_values=fill)
    acc = np.full((n, c, ho, wo), -np.inf, np.float32) if method == "MAX" else np.zeros((n, c, ho, wo), np.float64)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            patch = xp[:, :, i:i + stride[0] * (ho - 1) + 1:stride[0], j:j + stride[1] * (wo - 1) + 1:stride[1]]
            if method == "MAX":
                np.maximum(acc, patch, out=acc)
            else:
                acc += patch
    if method == "MAX":
        return acc
    if method != "AVE":
        raise ValueError(f"pooling method {method} is not supported (only MAX and AVE are used at test)")
    sizes = np.outer(_pool_axis_sizes(h, kernel[0], stride[0], pad[0], ho),
                     _pool_axis_sizes(w, kernel[1], stride[1], pad[1], wo))
    return (acc / sizes).astype(np.float32)


def interp_output_size(size, target, p):
    """interp_layer.cpp Reshape for one axis, cases in Caffe's order.

    Args:
      size: input height (or width).
      target: the `height` (or `width`) parameter.
      p: resolved InterpParameter dict (convert.netspec.resolve_params).
    """
    eff = size + p["pad_beg"] + p["pad_end"]
    if eff <= 0:
        raise ValueError(f"Interp input size {size} after padding {p['pad_beg']}/{p['pad_end']} is empty")
    if p["has_shrink"] and not p["has_zoom"]:
        return (eff - 1) // p["shrink_factor"] + 1
    if p["has_zoom"] and not p["has_shrink"]:
        return eff + (eff - 1) * (p["zoom_factor"] - 1)
    if p["has_height"] and p["has_width"]:
        return target
    if p["has_zoom"] and p["has_shrink"]:
        shrunk = (eff - 1) // p["shrink_factor"] + 1
        return shrunk + (shrunk - 1) * (p["zoom_factor"] - 1)
    raise ValueError("Interp needs zoom_factor, shrink_factor, or height and width")


def _interp_axis(in_eff, out_size, offset):
    """caffe_cpu_interp2 along one axis, in float32: (index0, index1, lambda0, lambda1)."""
    ratio = np.float32(in_eff - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0)
    pos = ratio * np.arange(out_size, dtype=np.float32)
    i0 = pos.astype(np.int64)
    step = (i0 < in_eff - 1).astype(np.int64)
    lam1 = pos - i0.astype(np.float32)
    lam0 = np.float32(1) - lam1
    return offset + i0, offset + i0 + step, lam0, lam1


def interp(x, params):
    """Caffe Interp (DeepLab): align-corners bilinear, sizes by zoom/shrink/height-width rules.

    Args:
      x: [N, C, H, W] float32.
      params: resolved InterpParameter dict (convert.netspec).

    Returns:
      [N, C, Ho, Wo] float32.
    """
    n, c, h, w = x.shape
    ho = interp_output_size(h, params["height"], params)
    wo = interp_output_size(w, params["width"], params)
    h_eff = h + params["pad_beg"] + params["pad_end"]
    w_eff = w + params["pad_beg"] + params["pad_end"]
    if (h_eff, w_eff) == (ho, wo) and params["pad_beg"] == 0:
        return x.copy()  # caffe_cpu_interp2 copies when sizes match
    offset = -params["pad_beg"]  # pad_beg <= 0 crops: the source starts at -pad_beg
    r0, r1, hl0, hl1 = _interp_axis(h_eff, ho, offset)
    c0, c1, wl0, wl1 = _interp_axis(w_eff, wo, offset)
    # out = h0l*(w0l*in[h1,w1] + w1l*in[h1,w1p]) + h1l*(w0l*in[h1p,w1] + w1l*in[h1p,w1p]), float32.
    # The inner (width) sums depend only on the input row, so they are formed once per input row and
    # then picked by the output rows: the same float32 operations on the same values as forming them
    # per output row (which sampled every output row's pair of input rows at full width: 2 s of
    # gathers for conv6_interp's 150 x 473 x 473).
    rows = wl0 * x[:, :, :, c0] + wl1 * x[:, :, :, c1]  # [N, C, H, Wo]
    out = hl0[:, None] * rows[:, :, r0, :]
    out += hl1[:, None] * rows[:, :, r1, :]
    return out.astype(np.float32, copy=False)


def eltwise(inputs, operation="SUM", coeff=()):
    """Caffe Eltwise: SUM (with optional coefficients), PROD or MAX."""
    if operation == "SUM":
        coeff = list(coeff) or [1.0] * len(inputs)
        out = inputs[0] * np.float32(coeff[0]) if coeff[0] != 1.0 else inputs[0].copy()
        for x, k in zip(inputs[1:], coeff[1:]):
            out += x * np.float32(k) if k != 1.0 else x
        return out
    if operation == "PROD":
        return np.prod(np.stack(inputs), axis=0)
    return np.max(np.stack(inputs), axis=0)


def _forward_layer(layer, inputs, blobs):
    """Runs one layer on its input arrays with weight `blobs`; returns the output array."""
    t, p = layer.type, layer.params
    if t == "Convolution":
        return convolution(inputs[0], blobs[0], blobs[1].reshape(-1) if p["bias_term"] else None,
                           p["stride"], p["pad"], p["dilation"])
    if t == "BN":
        return batch_norm(inputs[0], *blobs[:4], eps=p["eps"])
    if t == "ReLU":
        return relu(inputs[0], p["negative_slope"])
    if t == "Pooling":
        if p["global_pooling"]:
            return pooling(inputs[0], p["method"], inputs[0].shape[2:])
        return pooling(inputs[0], p["method"], p["kernel"], p["stride"], p["pad"])
    if t == "Interp":
        return interp(inputs[0], p)
    if t == "Eltwise":
        return eltwise(inputs, p["operation"], p["coeff"])
    if t == "Concat":
        return np.concatenate(inputs, axis=p["axis"])
    if t == "Dropout":
        return inputs[0]  # dropout_layer.cpp: a plain copy when phase != TRAIN
    raise ValueError(f"layer {layer.name!r} has type {t!r}, which the NumPy reference does not implement")


def needed_layers(layers, inputs, targets):
    """Indices of the layers that `targets` depend on, walking back from the last writer of each blob."""
    wanted, needed = set(targets), []
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if not wanted.intersection(layer.tops):
            continue
        if not layer.bottoms:
            missing = sorted(wanted.intersection(layer.tops) - set(inputs))
            if missing:
                raise ValueError(f"blob(s) {missing} come from data layer {layer.name!r}; pass them as inputs")
            continue
        needed.append(index)
        wanted.difference_update(layer.tops)
        wanted.update(layer.bottoms)
    unresolved = sorted(wanted - set(inputs))
    if unresolved:
        raise ValueError(f"no layer produces blob(s) {unresolved}")
    return needed[::-1]


def run_net(layers, inputs, targets, weights=None, callback=None):
    """Runs the layers that `targets` need, in file order, as Caffe's Net::Forward at TEST.

    Args:
      layers: ordered CaffeLayer list (from a caffemodel or a prototxt).
      inputs: {blob name: NCHW float32 array}, e.g. {'data': caffe_input(...)}.
      targets: blob names to return, e.g. ['conv6_interp'].
      weights: optional {layer name: [blobs]} overriding the layers' own blobs (a prototxt's layer list
        with a caffemodel's weights).
      callback: optional f(layer_name, output) called after each layer: intermediate outputs by
        layer name (in-place layers overwrite their blob, so blob names would not identify them).

    Returns:
      {blob name: array} for every target.
    """
    order = needed_layers(layers, inputs, targets)
    last_use = {}
    for position, index in enumerate(order):
        for name in layers[index].bottoms:
            last_use[name] = position
    blobs = dict(inputs)
    for position, index in enumerate(order):
        layer = layers[index]
        layer_blobs = weights.get(layer.name, layer.blobs) if weights is not None else layer.blobs
        out = _forward_layer(layer, [blobs[b] for b in layer.bottoms], layer_blobs)
        blobs[layer.tops[0]] = out
        if callback is not None:
            callback(layer.name, out)
        for name in layer.bottoms:  # free what no later layer reads (memory at 713 x 713)
            if last_use.get(name) == position and name not in targets and name != layer.tops[0]:
                blobs.pop(name, None)
    return {name: blobs[name] for name in targets}
