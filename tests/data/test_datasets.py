"""Dataset readers on tiny datasets in each official layout: label mapping pixel by pixel, read(i)
against the tf.data path, and a clear error for every kind of bad data."""

import os

import re

import numpy as np
import pytest
import tensorflow as tf

import psp_tf.data as D
from psp_tf import classes
from psp_tf.errors import UserError

from support import datasets as fx


def _pipeline_arrays(dataset):
    return [(i.numpy(), l.numpy(), n.numpy().decode()) for i, l, n in D.eval_source(dataset)]


def _assert_paths_agree(dataset):
    """read(i) (eager) and eval_source (tf.data graph) give identical arrays."""
    for k, (image, label, name) in enumerate(_pipeline_arrays(dataset)):
        ref_image, ref_label = dataset.read(k)
        np.testing.assert_array_equal(image, ref_image)
        np.testing.assert_array_equal(label, ref_label)
        assert name == dataset.names[k]


def test_ade20k_mapping_and_paths(tmp_path):
    fx.write_ade(str(tmp_path))
    ds = D.open_dataset("ade20k", str(tmp_path), "train")
    assert (len(ds), ds.num_classes, ds.split, ds.ignore_label) == (2, 150, "training", 255)
    assert ds.class_names[0] == "wall" and ds.palette[0] == (120, 120, 120)
    image, label = ds.read(0)
    assert image.shape == (fx.H, fx.W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, np.roll(fx.ADE_EXPECTED, 1, 1))
    _assert_paths_agree(ds)
    assert len(D.open_dataset("ade20k", str(tmp_path / "ADEChallengeData2016"), "validation")) == 1


def test_ade20k_greyscale_jpeg_is_replicated(tmp_path):
    root = fx.write_ade(str(tmp_path), n_train=1)
    grey = np.arange(fx.H * fx.W, dtype=np.uint8).reshape(fx.H, fx.W) * 5
    fx.write_grey(os.path.join(root, "images", "training", "ADE_train_00000001.png"), grey)
    os.remove(os.path.join(root, "images", "training", "ADE_train_00000001.jpg"))
    image, _ = D.open_dataset("ade20k", root, "training").read(0)
    np.testing.assert_array_equal(image, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("train_ids_too", [False, True])
def test_cityscapes_label_ids_and_train_ids(tmp_path, train_ids_too):
    fx.write_cityscapes(str(tmp_path), train_ids_too=train_ids_too)
    ds = D.open_dataset("cityscapes", str(tmp_path), "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.class_names[13] == "car"
    np.testing.assert_array_equal(ds.read(0)[1], fx.CS_EXPECTED)  # labelIds mapped with the table
    expected = fx.CS_TRAIN_IDS if train_ids_too else fx.CS_EXPECTED
    np.testing.assert_array_equal(ds.read(1)[1], expected)
    assert ds.names == ["aachen_000000_000019_leftImg8bit", "bremen_000001_000019_leftImg8bit"]
    _assert_paths_agree(ds)


def test_cityscapes_test_split_and_coarse(tmp_path):
    fx.write_cityscapes(str(tmp_path))
    os.rename(tmp_path / "leftImg8bit" / "val", tmp_path / "leftImg8bit" / "test")
    ds = D.open_dataset("cityscapes", str(tmp_path), "test")
    assert not ds.has_labels and ds.read(0)[1] is None
    assert _pipeline_arrays(ds)[0][1].shape == (0, 0)
    with pytest.raises(UserError, match=r"leftImg8bit[/\\]train_extra: cityscapes leftImg8bit directory"):
        D.open_dataset("cityscapes", str(tmp_path), "train_extra", coarse=True)
    with pytest.raises(UserError, match=r"gtCoarse[/\\]train: cityscapes gtCoarse directory not found"):
        D.open_dataset("cityscapes", str(tmp_path), "train", coarse=True)
    coarse = tmp_path / "gtCoarse" / "train" / "aachen"
    os.makedirs(coarse)
    fx.write_grey(str(coarse / "aachen_000000_000019_gtCoarse_labelIds.png"), fx.CS_LABEL_IDS[::-1, ::-1])
    os.remove(tmp_path / "leftImg8bit" / "train" / "bremen" / "bremen_000001_000019_leftImg8bit.png")
    ds = D.open_dataset("cityscapes", str(tmp_path), "train", coarse=True)
    np.testing.assert_array_equal(ds.read(0)[1], fx.CS_EXPECTED[::-1, ::-1])


def test_voc2012_palette_png_indices(tmp_path):
    fx.write_voc(str(tmp_path))
    ds = D.open_dataset("voc2012", str(tmp_path), "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names[15] == "person"
    np.testing.assert_array_equal(ds.read(1)[1], fx.VOC_RAW)  # indices, not colours or luminance
    _assert_paths_agree(ds)
    assert len(D.open_dataset("voc2012", str(tmp_path / "VOCdevkit"), "trainval")) == 3


def test_voc_aug_train_aug_split(tmp_path):
    # VOC train {1, 2}, val {3}; SBD train {2, 4}, val {3, 5}: train_aug = {1, 2, 4, 5}.
    ids = [f"2008_00000{i}" for i in range(1, 6)]
    fx.write_voc(str(tmp_path), train=ids[:2], val=ids[2:3], sbd_only=ids[3:4])
    fx.write_sbd(str(tmp_path), train=[ids[1], ids[3]], val=[ids[2], ids[4]])
    ds = D.open_dataset("voc_aug", str(tmp_path), "train_aug")
    assert ds.names == [ids[0], ids[1], ids[3], ids[4]]
    labels = [ds.read(k)[1] for k in range(4)]
    # ids 1 and 2 have VOC labels (preferred, with 255 borders); 4 and 5 only SBD .mat files.
    for label, expected in zip(labels, (fx.VOC_RAW, fx.VOC_RAW, fx.SBD_RAW, fx.SBD_RAW)):
        np.testing.assert_array_equal(label, expected)
    assert ds.examples[3][0].endswith(os.path.join("img", ids[4] + ".jpg"))  # image only in SBD
    _assert_paths_agree(ds)
    assert D.open_dataset("voc_aug", str(tmp_path), "val").names == [ids[2]]


def test_folder_dataset(tmp_path):
    fx.write_folder(str(tmp_path))
    ds = D.open_dataset("folder", str(tmp_path), "train", num_classes=3, class_names="a,b,c")
    assert ds.class_names == ("a", "b", "c") and len(ds) == 2
    np.testing.assert_array_equal(ds.read(0)[0], fx.image(0))
    np.testing.assert_array_equal(ds.read(0)[1], fx.FOLDER_RAW)
    _assert_paths_agree(ds)
    with open(tmp_path / "subset.txt", "w") as f:
        f.write("img1\n")
    for name in ("images", "labels"):
        for file in os.listdir(tmp_path / name / "train"):
            os.rename(tmp_path / name / "train" / file, tmp_path / name / file)
    ds = D.open_dataset("folder", str(tmp_path), "subset", num_classes=3)
    assert ds.names == ["img1"] and ds.class_names == ("class_0", "class_1", "class_2")


def test_a_file_name_that_is_not_utf8_is_one_error_naming_it(tmp_path):
    fx.write_folder(str(tmp_path))
    images = os.path.join(os.fsencode(tmp_path), b"images", b"train")
    os.rename(os.path.join(images, b"img1.png"), os.path.join(images, b"img\xe91.png"))  # Latin-1 'é'
    with pytest.raises(UserError, match=re.escape(f"{tmp_path}/images/train: holds a file name that is not "
                                                  f"valid UTF-8 ('img\\udce91.png'); TensorFlow cannot read it")):
        D.open_dataset("folder", str(tmp_path), "train", num_classes=3)


@pytest.mark.slow  # ~2.7 s quiet: four synthetic images rendered eagerly
def test_synthetic_is_deterministic_and_splits_differ():
    train = D.open_dataset("synthetic", None, "train", num_images=3, seed=5)
    image, label = train.read(2)
    assert 160 <= image.shape[0] <= 200 and 160 <= image.shape[1] <= 240
    assert set(np.unique(label)) <= {0, 1, 2, 3} and len(np.unique(label)) >= 2
    again = D.open_dataset("synthetic", None, "train", num_images=3, seed=5).read(2)
    np.testing.assert_array_equal(image, again[0])
    val = D.open_dataset("synthetic", None, "val", num_images=3, seed=5).read(2)[0]
    other_seed = D.open_dataset("synthetic", None, "train", num_images=3, seed=6).read(2)[0]
    assert val.shape != image.shape or (val != image).mean() > 0.5
    assert other_seed.shape != image.shape or (other_seed != image).mean() > 0.5
    _assert_paths_agree(train)


def test_synthetic_colours_do_not_identify_classes():
    ds = D.open_dataset("synthetic", None, "train", num_images=12)
    means = {c: [] for c in (1, 2, 3)}
    for k in range(len(ds)):
        image, label = ds.read(k)
        for c in means:
            if (label == c).sum() > 200:
                means[c].append(image[label == c].mean(0))
    for c, values in means.items():
        assert len(values) >= 3, c
        assert np.std(values, axis=0).mean() > 20, c  # instance colours vary widely within a class


# ---- bad data: one clear error naming the file / directory / option ----

def test_unknown_name_option_split(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'ade'.*ade20k.*voc2012"):
        D.open_dataset("ade", str(tmp_path), "train")
    with pytest.raises(UserError, match="unknown option.*fine.*valid options: coarse"):
        D.open_dataset("cityscapes", str(tmp_path), "train", fine=True)
    with pytest.raises(UserError, match="no split 'test'.*training"):
        D.open_dataset("ade20k", str(tmp_path), "test")


def test_missing_directory_and_split_list(tmp_path):
    with pytest.raises(UserError, match=r"images[/\\]training: ade20k images directory not found"):
        D.open_dataset("ade20k", str(tmp_path), "training")
    voc = fx.write_voc(str(tmp_path))
    os.remove(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"))
    with pytest.raises(UserError, match=r"val\.txt: split list not found"):
        D.open_dataset("voc2012", str(tmp_path), "val")
    with pytest.raises(UserError, match="no SBD directory"):
        D.open_dataset("voc_aug", str(tmp_path), "train_aug")


def test_empty_split(tmp_path):
    os.makedirs(tmp_path / "images" / "training")
    os.makedirs(tmp_path / "annotations" / "training")
    with pytest.raises(UserError, match="split 'training' of ade20k is empty"):
        D.open_dataset("ade20k", str(tmp_path), "training")
    voc = fx.write_voc(str(tmp_path / "v"))
    open(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), "w").close()
    with pytest.raises(UserError, match=r"train\.txt: split list is empty"):
        D.open_dataset("voc2012", str(tmp_path / "v"), "train")


def test_unpaired_files(tmp_path):
    root = fx.write_ade(str(tmp_path))
    os.remove(os.path.join(root, "annotations", "training", "ADE_train_00000002.png"))
    with pytest.raises(UserError, match="ADE_train_00000002.jpg: image has no label"):
        D.open_dataset("ade20k", root, "training")
    os.remove(os.path.join(root, "images", "validation", "ADE_val_00000001.jpg"))
    fx.write_image(os.path.join(root, "images", "validation", "ADE_val_00000002.jpg"), fx.image(0))
    fx.write_grey(os.path.join(root, "annotations", "validation", "ADE_val_00000002.png"), fx.ADE_RAW)
    with pytest.raises(UserError, match="ADE_val_00000001.png: label has no image"):
        D.open_dataset("ade20k", root, "validation")
    fx.write_cityscapes(str(tmp_path / "cs"))
    os.remove(tmp_path / "cs" / "gtFine" / "val" / "bremen" / "bremen_000001_000019_gtFine_labelIds.png")
    with pytest.raises(UserError, match="bremen_000001_000019_leftImg8bit.png: image has no label"):
        D.open_dataset("cityscapes", str(tmp_path / "cs"), "val")
    voc = fx.write_voc(str(tmp_path / "v"))
    os.remove(os.path.join(voc, "SegmentationClass", "2007_000002.png"))
    with pytest.raises(UserError, match="2007_000002.png: listed in the split but not found"):
        D.open_dataset("voc2012", str(tmp_path / "v"), "train")


def test_size_mismatch(tmp_path):
    root = fx.write_folder(str(tmp_path))
    fx.write_grey(os.path.join(root, "labels", "train", "img1.png"), np.zeros((5, 8), np.uint8))
    ds = D.open_dataset("folder", root, "train", num_classes=3)
    with pytest.raises(UserError, match=r"img1.png: label is 5x8 but image .*img1.png is 6x8"):
        ds.read(1)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"img1.png: label/image size mismatch: label is 5x8 but image is 6x8"):
        _pipeline_arrays(ds)


@pytest.mark.parametrize("dataset", ["ade20k", "voc2012", "folder"])
def test_label_values_outside_the_mapping(tmp_path, dataset):
    if dataset == "ade20k":
        root = fx.write_ade(str(tmp_path))
        path = os.path.join(root, "annotations", "training", "ADE_train_00000001.png")
        fx.write_grey(path, np.full((fx.H, fx.W), 151, np.uint8))
        ds, bad = D.open_dataset("ade20k", root, "training"), "151"
    elif dataset == "voc2012":
        voc = fx.write_voc(str(tmp_path))
        path = os.path.join(voc, "SegmentationClass", "2007_000001.png")
        fx.write_voc_png(path, np.full((fx.H, fx.W), 21, np.uint8))  # a palette index past 20
        ds, bad = D.open_dataset("voc2012", str(tmp_path), "train"), "21"
    else:
        root = fx.write_folder(str(tmp_path))
        path = os.path.join(root, "labels", "train", "img0.png")
        fx.write_grey(path, np.full((fx.H, fx.W), 3, np.uint8))
        ds, bad = D.open_dataset("folder", root, "train", num_classes=3), "3"
    with pytest.raises(UserError, match=rf"{os.path.basename(path)}: label values \[{bad}\] are outside"):
        ds.read(0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=os.path.basename(path) + ": label values outside"):
        _pipeline_arrays(ds)


def test_voc_colour_label_that_is_not_the_palette(tmp_path):
    voc = fx.write_voc(str(tmp_path))
    fx.write_image(os.path.join(voc, "SegmentationClass", "2007_000001.png"), fx.image(3))
    colours = sorted({tuple(int(v) for v in c) for c in fx.image(3).reshape(-1, 3)}
                     - {classes.voc_palette_color(i) for i in range(256)})[:8]
    message = f"2007_000001.png: colours {colours} are not in the VOC palette"
    with pytest.raises(UserError, match=re.escape(message)):
        D.open_dataset("voc2012", str(tmp_path), "train").read(0)


def test_undecodable_and_truncated_files(tmp_path):
    root = fx.write_folder(str(tmp_path), n=3)
    with open(os.path.join(root, "images", "train", "img0.png"), "wb") as f:
        f.write(b"this is not an image")
    full = open(os.path.join(root, "images", "train", "img1.png"), "rb").read()
    with open(os.path.join(root, "images", "train", "img1.png"), "wb") as f:
        f.write(full[: len(full) // 2])
    fx.write_image(os.path.join(root, "images", "train", "img2.jpg"), fx.image(2, 64, 64))
    os.remove(os.path.join(root, "images", "train", "img2.png"))
    full = open(os.path.join(root, "images", "train", "img2.jpg"), "rb").read()
    with open(os.path.join(root, "images", "train", "img2.jpg"), "wb") as f:
        f.write(full[: len(full) // 2])
    ds = D.open_dataset("folder", root, "train", num_classes=3)
    for k, name in enumerate(("img0.png", "img1.png", "img2.jpg")):
        with pytest.raises(UserError, match=rf"{name}: cannot decode image"):
            ds.read(k)


def test_sbd_mat_without_gtcls(tmp_path):
    ids = ["2008_000001", "2008_000002", "2008_000003"]
    fx.write_voc(str(tmp_path), train=ids[:1], val=ids[2:], sbd_only=ids[1:2])
    fx.write_sbd(str(tmp_path), train=ids[1:2], val=ids[1:2])
    import scipy.io
    scipy.io.savemat(str(tmp_path / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000002.mat"),
                     {"GTinst": np.zeros((2, 2))})
    ds = D.open_dataset("voc_aug", str(tmp_path), "train_aug")
    with pytest.raises(UserError, match="2008_000002.mat: not an SBD GTcls .mat file"):
        ds.read(1)
