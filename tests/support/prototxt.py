"""The author's prototxt layer lists and plain NumPy conv / BN, for golden checks."""

import os
import re

import numpy as np

from support import REPO

SPECS = os.path.join(REPO, "psp_tf", "specs")
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
