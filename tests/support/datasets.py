"""Writers of tiny datasets in each official on-disk layout (docs/datasets.md), used by the data tests.

Every label is written from a hand-written raw array; the expected train ids are hand-written too.
"""

import os

import cv2
import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from psp_tf import classes

H, W = 6, 8


def image(seed, h=H, w=W):
    """A deterministic random RGB uint8 [h, w, 3] image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path, rgb):
    """Writes RGB as PNG (lossless) or JPEG by extension."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]))


def write_grey(path, values):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.asarray(values, np.uint8))


def write_voc_png(path, indices):
    """A real VOC label: a "P" mode PNG with the VOC palette, pixel values = class indices."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(np.asarray(indices, np.uint8), mode="P")
    img.putpalette([c for i in range(256) for c in classes.voc_palette_color(i)])
    img.save(path)


def write_sbd_mat(path, indices):
    """A real SBD label: MATLAB v5 struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    seg = np.asarray(indices, np.uint8)
    boundaries = np.empty((20, 1), object)
    for k in range(20):  # a cell of 20 sparse boundary maps, as in the release
        boundaries[k, 0] = scipy.sparse.csc_matrix(seg.shape, dtype=bool)
    gt = {"Segmentation": seg, "Boundaries": boundaries,
          "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8)[:, None]}
    scipy.io.savemat(path, {"GTcls": gt}, do_compression=True)


# ADE20K: 0 = other -> 255, v -> v - 1.
ADE_RAW = np.array([[0, 1, 2, 150, 149, 0, 1, 1]] * H, np.uint8)
ADE_EXPECTED = np.array([[255, 0, 1, 149, 148, 255, 0, 0]] * H, np.uint8)


def write_ade(root, n_train=2, n_val=1):
    base = os.path.join(root, "ADEChallengeData2016")
    for split, n, prefix in (("training", n_train, "train"), ("validation", n_val, "val")):
        for i in range(1, n + 1):
            name = f"ADE_{prefix}_{i:08d}"
            write_image(os.path.join(base, "images", split, name + ".jpg"), image(i))
            write_grey(os.path.join(base, "annotations", split, name + ".png"), np.roll(ADE_RAW, i, 1))
    return base


# Cityscapes labelIds (official table) and their train ids.
CS_LABEL_IDS = np.array([[0, 7, 8, 9, 11, 26, 33, 24]] * H, np.uint8)
CS_EXPECTED = np.array([[255, 0, 1, 255, 2, 13, 18, 11]] * H, np.uint8)
CS_TRAIN_IDS = np.array([[0, 18, 255, 5, 5, 10, 3, 3]] * H, np.uint8)


def write_cityscapes(root, train_ids_too=False):
    """Two cities: one frame with labelIds only; with train_ids_too, a second frame with both files."""
    frames = [("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")]
    for split in ("train", "val"):
        for k, (city, frame) in enumerate(frames):
            write_image(os.path.join(root, "leftImg8bit", split, city, frame + "_leftImg8bit.png"), image(k))
            gt = os.path.join(root, "gtFine", split, city, frame + "_gtFine_")
            write_grey(gt + "labelIds.png", CS_LABEL_IDS)
            write_grey(gt + "color.png", np.zeros((H, W), np.uint8))
            if train_ids_too and k == 1:
                write_grey(gt + "labelTrainIds.png", CS_TRAIN_IDS)
    return root


# VOC palette indices (0..20 and 255 borders) and SBD indices (0..20, no borders).
VOC_RAW = np.array([[0, 1, 15, 20, 255, 255, 7, 0]] * H, np.uint8)
SBD_RAW = np.array([[0, 3, 3, 19, 20, 0, 5, 5]] * H, np.uint8)


def write_voc(root, train=("2007_000001", "2007_000002"), val=("2007_000003",), sbd_only=()):
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for image_id in (*train, *val, *sbd_only):
        write_image(os.path.join(voc, "JPEGImages", image_id + ".jpg"), image(sum(map(ord, image_id))))
    for image_id in (*train, *val):
        write_voc_png(os.path.join(voc, "SegmentationClass", image_id + ".png"), VOC_RAW)
    seg = os.path.join(voc, "ImageSets", "Segmentation")
    os.makedirs(seg, exist_ok=True)
    for split, ids in (("train", train), ("val", val), ("trainval", (*train, *val))):
        with open(os.path.join(seg, split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return voc


def write_sbd(root, train, val):
    sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
    for image_id in (*train, *val):
        write_sbd_mat(os.path.join(sbd, "cls", image_id + ".mat"), SBD_RAW)
        write_image(os.path.join(sbd, "img", image_id + ".jpg"), image(7))
    for split, ids in (("train", train), ("val", val)):
        with open(os.path.join(sbd, split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return sbd


FOLDER_RAW = np.array([[0, 1, 2, 255, 2, 1, 0, 0]] * H, np.uint8)


def write_folder(root, split="train", n=2):
    for i in range(n):
        write_image(os.path.join(root, "images", split, f"img{i}.png"), image(i))
        write_grey(os.path.join(root, "labels", split, f"img{i}.png"), FOLDER_RAW)
    return root
