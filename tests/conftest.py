"""Shared test helpers: the author's prototxt layer lists, a plain NumPy conv for golden checks, and
float32 error bounds for tolerances derived from the computation (never fitted to one machine)."""

import os
import re

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23, twice float32's unit roundoff


def gamma(n, eps=EPS32):
    """Higham's gamma_n = n eps / (1 - n eps), evaluated with eps = 2u (a factor-2 margin).

    |fl(sum_i a_i b_i) - sum_i a_i b_i| <= gamma_n * sum_i |a_i b_i| for an n-term float32 sum or dot
    product in ANY order and with or without FMA (Higham, Accuracy and Stability, eq. 3.5 with u), so
    the bound covers oneDNN's and Eigen's different blockings and ISAs alike; the factor 2 covers the
    roundings of inputs and products that the sum itself does not count.
    """
    if n * eps >= 1:
        raise ValueError(f"gamma_{n} is undefined in float32")
    return n * eps / (1 - n * eps)


def dot_error_bound(n, abs_sum, eps=EPS32):
    """The float32 error bound of an n-term dot product: gamma_n times sum |a_i||b_i| (elementwise)."""
    return gamma(n, eps) * np.asarray(abs_sum, np.float64)

SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "psp_tf", "specs")
PRESET_PROTOTXTS = {
    "pspnet50_ade20k": os.path.join(SPECS, "pspnet50_ADE20K_473.prototxt"),
    "pspnet101_voc2012": os.path.join(SPECS, "pspnet101_VOC2012_473.prototxt"),
    "pspnet101_cityscapes": os.path.join(SPECS, "pspnet101_cityscapes_713.prototxt"),
}


def prototxt_layers(path):
    """[(name, type, body)] of every `layer { ... }` in a deploy prototxt (a test-only regex reader)."""
    text = open(path).read()
    found = []
    for block in re.split(r"\nlayer\s*\{", text)[1:]:
        name = re.search(r'^\s*name:\s*"([^"]+)"', block, re.M).group(1)
        kind = re.search(r'^\s*type:\s*"([^"]+)"', block, re.M).group(1)
        found.append((name, kind, block))
    return found


def np_conv2d(x, kernel, stride=1, pad=0, dilation=1):
    """Cross-correlation of x [H, W, Cin] with an HWIO kernel, Caffe's pad/stride/dilation, float64."""
    kh, kw, cin, cout = kernel.shape
    x = np.pad(x.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
    out_h = (x.shape[0] - (dilation * (kh - 1) + 1)) // stride + 1
    out_w = (x.shape[1] - (dilation * (kw - 1) + 1)) // stride + 1
    out = np.zeros((out_h, out_w, cout))
    for i in range(kh):
        for j in range(kw):
            patch = x[i * dilation: i * dilation + stride * (out_h - 1) + 1: stride,
                      j * dilation: j * dilation + stride * (out_w - 1) + 1: stride]
            out += patch @ kernel[i, j].astype(np.float64)
    return out


def np_bn(x, gamma, beta, mean, var, eps=1e-5):
    """The author's BN layer: slope * (x - mean) / sqrt(var + eps) + bias."""
    return gamma * (x - mean) / np.sqrt(var + eps) + beta
