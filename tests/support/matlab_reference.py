"""A NumPy transcription of the author's MATLAB test protocol, for checking psp_tf.evaluation.

Written from docs/caffe_reference.md §3.2-3.5 (eval_sub.m, scale_process.m, pre_img.m,
caffe_process.m) and MATLAB's imresize.m (contributions, dimensionOrder, per-dimension uint8 output),
deliberately loop-by-loop and 1-based like the MATLAB code, sharing no code with the package.
"""

import math

import numpy as np


def mround(x):
    """MATLAB round: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def contributions(in_length, out_length, scale):
    """imresize.m contributions() for the triangle kernel (width 2), antialiasing on."""
    if scale < 1:
        h = lambda x: scale * _triangle(scale * x)
        width = 2.0 / scale
    else:
        h = _triangle
        width = 2.0
    x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = int(math.ceil(width)) + 2
    indices = left + np.arange(p)[None, :]
    weights = h(u - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    indices = np.minimum(np.maximum(1, indices), in_length).astype(int)
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _triangle(x):
    return (x + 1) * ((-1 <= x) & (x < 0)) + (1 - x) * ((0 <= x) & (x <= 1))


def _resize_dim(a, dim, weights, indices):
    out_len = weights.shape[0]
    moved = np.moveaxis(a.astype(np.float64), dim, 0)
    out = np.zeros((out_len,) + moved.shape[1:])
    for k in range(out_len):  # imresizemex: one output line at a time, taps in order
        for j in range(weights.shape[1]):
            out[k] += weights[k, j] * moved[indices[k, j] - 1]
    out = np.moveaxis(out, 0, dim)
    if a.dtype == np.uint8:
        return np.clip(mround(out), 0, 255).astype(np.uint8)
    return out.astype(a.dtype)


def imresize(a, rows, cols):
    """imresize(a, [rows cols], 'bilinear') for [H, W, C] uint8 or float arrays."""
    scale = np.array([rows / a.shape[0], cols / a.shape[1]])
    contrib = [contributions(a.shape[0], rows, scale[0]), contributions(a.shape[1], cols, scale[1])]
    for dim in np.argsort(scale, kind="stable"):
        a = _resize_dim(a, dim, *contrib[dim])
    return a


def caffe_process(net, input_data, flip=True):
    """Logits of the tile plus the un-flipped logits of its mirror image, then exp / sum(exp)."""
    score = net(input_data).astype(np.float64)
    if flip:
        score = score + net(input_data[:, ::-1])[:, ::-1]
    score = np.exp(score)  # no max subtraction, as the MATLAB code
    return score / score.sum(axis=2, keepdims=True)


def pre_img(im, crop, mean):
    """pre_img.m: pad the (single) image with the exact mean to crop x crop. Mean subtraction and BGR
    are inside our model, so this returns RGB 0..255."""
    im = im.astype(np.float32)
    rows, cols = im.shape[:2]
    out = np.empty((max(rows, crop), max(cols, crop), 3), np.float32)
    out[:] = np.asarray(mean, np.float32)
    out[:rows, :cols] = im
    return out


def scale_process(net, img_scale, num_classes, crop, ori_rows, ori_cols, mean, flip=True):
    new_rows, new_cols = img_scale.shape[:2]
    long_size, short_size = max(new_rows, new_cols), min(new_rows, new_cols)
    if long_size <= crop:
        score = caffe_process(net, pre_img(img_scale, crop, mean), flip)[:new_rows, :new_cols]
    else:
        stride = math.ceil(crop * 2 / 3)
        if short_size < crop:
            pad_value = np.array([mround(m) for m in mean], np.uint8)  # uint8 padarray casts the mean
            padded = np.empty((max(new_rows, crop), max(new_cols, crop), 3), np.uint8)
            padded[:] = pad_value
            padded[:new_rows, :new_cols] = img_scale
            img_scale = padded
        pad_rows, pad_cols = img_scale.shape[:2]
        h_grid = int(math.ceil(np.float32(pad_rows - crop) / stride)) + 1
        w_grid = int(math.ceil(np.float32(pad_cols - crop) / stride)) + 1
        data_scale = np.zeros((pad_rows, pad_cols, num_classes))
        count_scale = np.zeros((pad_rows, pad_cols, num_classes))
        for grid_yidx in range(1, h_grid + 1):
            for grid_xidx in range(1, w_grid + 1):
                s_x = (grid_xidx - 1) * stride + 1
                s_y = (grid_yidx - 1) * stride + 1
                e_x = min(s_x + crop - 1, pad_cols)
                e_y = min(s_y + crop - 1, pad_rows)
                s_x, s_y = e_x - crop + 1, e_y - crop + 1
                tile = img_scale[s_y - 1:e_y, s_x - 1:e_x]
                data_scale[s_y - 1:e_y, s_x - 1:e_x] += caffe_process(net, pre_img(tile, crop, mean), flip)
                count_scale[s_y - 1:e_y, s_x - 1:e_x] += 1
        score = (data_scale / count_scale)[:new_rows, :new_cols]
    data_output = imresize(score.astype(np.float32), ori_rows, ori_cols).astype(np.float64)
    return data_output / data_output.sum(axis=2, keepdims=True)


def eval_image(net, img, num_classes, scales, base_size, crop, mean, flip=True):
    """eval_sub.m for one image: returns (0-based labels [H, W], probabilities [H, W, K])."""
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.concatenate([img] * 3, axis=2)
    ori_rows, ori_cols = img.shape[:2]
    data_all = np.zeros((ori_rows, ori_cols, num_classes))
    for s in scales:
        long_size = base_size * s + 1
        if ori_rows > ori_cols:
            new_rows = long_size
            new_cols = mround(np.float32(long_size) / np.float32(ori_rows) * np.float32(ori_cols))
        else:
            new_cols = long_size
            new_rows = mround(np.float32(long_size) / np.float32(ori_cols) * np.float32(ori_rows))
        img_scale = imresize(img, int(math.ceil(new_rows)), int(math.ceil(new_cols)))
        data_all += scale_process(net, img_scale, num_classes, crop, ori_rows, ori_cols, mean, flip)
    data = data_all / len(scales)
    return np.argmax(data, axis=2), data
