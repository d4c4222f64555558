"""PASCAL VOC 2012 segmentation, and VOC 2012 + SBD ("train_aug", 10,582 images), as downloaded.

VOC labels are palette PNGs whose pixel values are the class indices; decoders expand them to
colours, so `decode.voc_palette_index` inverts the palette (label format decode.VOC_PALETTE, which
also accepts the palette colours as plain RGB and the indices as grey; colours off the palette are
errors). SBD labels are MATLAB .mat files (GTcls.Segmentation, 0..20, no 255 borders) read with
scipy (docs/datasets.md, VOC and SBD).
"""

import io
import os

import numpy as np
import scipy.io
import tensorflow as tf

from psp_tf import classes
from psp_tf.data import base, decode
from psp_tf.data.options import VocAugOptions

VOC_SPLITS = ("train", "val", "trainval", "test")
AUG_SPLITS = ("train_aug", "val")


def find_voc_root(data_dir):
    """Accepts VOC2012, VOCdevkit, or the directory containing VOCdevkit."""
    for candidate in (data_dir, os.path.join(data_dir, "VOC2012"),
                      os.path.join(data_dir, "VOCdevkit", "VOC2012")):
        if tf.io.gfile.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise base.UserError(f"{data_dir}: no VOC2012 directory (expected VOCdevkit/VOC2012/JPEGImages)")


def find_sbd_root(data_dir):
    """Accepts benchmark_RELEASE/dataset, benchmark_RELEASE, or the directory containing it."""
    for candidate in (data_dir, os.path.join(data_dir, "dataset"),
                      os.path.join(data_dir, "benchmark_RELEASE", "dataset")):
        if tf.io.gfile.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise base.UserError(f"{data_dir}: no SBD directory (expected benchmark_RELEASE/dataset/cls)")


def read_id_list(path):
    """Image ids of a split list, one a line; a missing or empty list is a UserError."""
    if not tf.io.gfile.exists(path):
        raise base.UserError(f"{path}: split list not found")
    ids = [line.split()[0] for line in base.read_bytes(path).decode().splitlines() if line.strip()]
    if not ids:
        raise base.UserError(f"{path}: split list is empty")
    return ids


def voc_lut():
    return decode.identity_lut(21)


def read_sbd_mat(path):
    """GTcls.Segmentation of an SBD .mat file as int32 [H, W].

    Raises:
      UserError: unreadable, or Segmentation is not a 2-D integer array of values 0..255 (casting
        anything else would change the values silently).
    """
    try:
        mat = scipy.io.loadmat(io.BytesIO(base.read_bytes(path)))
        seg = np.asarray(mat["GTcls"][0]["Segmentation"][0])
    except (ValueError, KeyError, IndexError, TypeError, OSError, NotImplementedError) as e:
        raise base.UserError(f"{path}: not an SBD GTcls .mat file ({e})") from None
    if seg.ndim != 2 or seg.dtype.kind not in "iu" or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise base.UserError(f"{path}: GTcls.Segmentation is {seg.dtype} {seg.shape}, expected a 2-D "
                             f"integer array of class indices 0..255")
    return seg.astype(np.int32)


class VOCDataset(base.Dataset):
    """A VOC split whose labels may be VOC palette PNGs or SBD .mat files."""

    def _raw_label(self, label_path):
        if label_path.endswith(".mat"):
            return read_sbd_mat(label_path)
        return super()._raw_label(label_path)

    def label_blobs(self):
        """PNG-encoded raw values of the .mat labels (read once, kept in memory for the graph)."""
        if not any(e[1] and e[1].endswith(".mat") for e in self.examples):
            return None
        if getattr(self, "_blobs", None) is None:
            self._blobs = [decode.encode_label_png(read_sbd_mat(e[1]).astype(np.uint8))
                           if e[1] and e[1].endswith(".mat") else b"" for e in self.examples]
        return self._blobs


def _missing(examples, what):
    """Raises DataProblems naming every listed file of `examples` that does not exist (collected:
    returns the examples whose files all exist)."""
    missing = {path for example in examples for path in example if path and not tf.io.gfile.exists(path)}
    base.raise_problems([f"{path}: {what} but not found" for example in examples for path in example
                         if path in missing])
    return [example for example in examples if not missing.intersection(example)]


def _voc_example(voc, image_id, labelled):
    image = os.path.join(voc, "JPEGImages", image_id + ".jpg")
    label = os.path.join(voc, "SegmentationClass", image_id + ".png") if labelled else None
    return image, label


def open_voc2012(data_dir, split, options=None):
    """Opens VOC 2012 segmentation `split` (train/val/trainval, or test without labels); no options.

    Raises:
      UserError: unknown split, missing directory/list/file.
    """
    if split not in VOC_SPLITS:
        raise base.UserError(f"voc2012 has no split {split!r}; valid splits: {', '.join(VOC_SPLITS)}")
    voc = find_voc_root(data_dir)
    ids = read_id_list(os.path.join(voc, "ImageSets", "Segmentation", split + ".txt"))
    labelled = split != "test"
    examples = _missing([_voc_example(voc, i, labelled) for i in ids], "listed in the split")
    return VOCDataset("voc2012", split, examples, 21, classes.VOC2012_CLASSES, classes.VOC2012_PALETTE,
                      luts=[voc_lut()], where=voc, label_format=decode.VOC_PALETTE)


def train_aug_ids(voc, sbd):
    """(SBD train ∪ SBD val ∪ VOC train) − VOC val, sorted: the 10,582-image train_aug split."""
    seg = os.path.join(voc, "ImageSets", "Segmentation")
    ids = set(read_id_list(os.path.join(sbd, "train.txt"))) | set(read_id_list(os.path.join(sbd, "val.txt")))
    ids |= set(read_id_list(os.path.join(seg, "train.txt")))
    return sorted(ids - set(read_id_list(os.path.join(seg, "val.txt"))))


def _aug_example(voc, sbd, image_id, voc_labels):
    """Prefers VOC 2012's label (finer, with 255 borders) where the id has one, else SBD's .mat."""
    image = os.path.join(voc, "JPEGImages", image_id + ".jpg")
    if not tf.io.gfile.exists(image):
        image = os.path.join(sbd, "img", image_id + ".jpg")
    if image_id in voc_labels:
        label = os.path.join(voc, "SegmentationClass", image_id + ".png")
    else:
        label = os.path.join(sbd, "cls", image_id + ".mat")
    return image, label


def open_voc_aug(data_dir, split, options=VocAugOptions()):
    """Opens VOC 2012 + SBD: split train_aug (10,582 images) or val (VOC 2012 val).

    Args:
      data_dir: directory holding VOCdevkit/ (or VOC2012/) and benchmark_RELEASE/.
      split: 'train_aug' or 'val'.
      options: VocAugOptions (voc_dir, sbd_dir: VOC 2012 / SBD locations if not under data_dir).
    """
    voc_dir, sbd_dir = options.voc_dir, options.sbd_dir
    if split not in AUG_SPLITS:
        raise base.UserError(f"voc_aug has no split {split!r}; valid splits: {', '.join(AUG_SPLITS)}")
    voc = find_voc_root(voc_dir or data_dir)
    if split == "val":
        dataset = open_voc2012(voc, "val")
        dataset.name = "voc_aug"
        return dataset
    sbd = find_sbd_root(sbd_dir or data_dir)
    voc_labels = {base.stem(n) for n in base.list_directory(os.path.join(voc, "SegmentationClass"))}
    examples = _missing([_aug_example(voc, sbd, i, voc_labels) for i in train_aug_ids(voc, sbd)],
                        "listed in the train_aug lists")
    return VOCDataset("voc_aug", split, examples, 21, classes.VOC2012_CLASSES, classes.VOC2012_PALETTE,
                      luts=[voc_lut()], where=sbd, label_format=decode.VOC_PALETTE)
