"""Labels are never silently reinterpreted: each layout's label files have one expected kind, and
anything else is an error naming the file, in read(i), in the tf.data pipelines, in the check tool,
in the TFRecord writer and reader, and in train.py / evaluate.py (one `error:` line)."""

import os
import re
import shutil

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

import psp_tf.data as D
from psp_tf import classes
from psp_tf.cli import check_data, write_tfrecords
from psp_tf.data import base, tfrecords
from psp_tf.data.config import AugmentConfig
from psp_tf.presets import CAFFE_MEAN_RGB
from psp_tf.errors import UserError

from support import datasets as fx

GREY_EXPECTED = "expected an 8-bit single-channel (grey) PNG of label values"
VOC_EXPECTED = "expected a VOC palette PNG (or its colours as 8-bit RGB, or the indices as 8-bit grey)"


def write_png(path, image, **pil_options):
    """Writes any PNG kind: uint8/uint16 arrays with OpenCV (BGR order irrelevant here), PIL images as given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(image, Image.Image):
        image.save(path, "PNG", **pil_options)
    else:
        assert cv2.imwrite(path, image)


def _palette_image(indices, palette):
    image = Image.fromarray(np.asarray(indices, np.uint8), "P")
    image.putpalette([c for colour in palette for c in colour])
    return image


def wrong_labels(raw):
    """Label files of every kind a grey layout must refuse, holding the values `raw` somehow.

    Returns {case: (image to write, what the error says the file is)}.
    """
    raw = np.asarray(raw, np.uint8)
    grey_ramp = [(i, i, i) for i in range(256)]
    return {
        # The example: ADE values 1..150 as 16-bit were read as their high byte 0 = ignore.
        "16bit": (raw.astype(np.uint16), "16-bit grey PNG"),
        # The example: a grey RGB image went through the VOC palette (0 -> 0, 128 -> 7).
        "rgb": (np.dstack([raw] * 3), "8-bit RGB PNG"),
        "rgba": (np.dstack([raw] * 3 + [np.full_like(raw, 255)]), "8-bit RGBA PNG"),
        "grey_alpha": (Image.fromarray(np.dstack([raw, np.full_like(raw, 255)]), "LA"), "8-bit grey+alpha PNG"),
        # A palette PNG whose palette is a grey ramp decodes to the right values by luck, still refused.
        "palette": (_palette_image(raw, grey_ramp), "8-bit palette PNG"),
        "1bit": (Image.fromarray(raw > 0), "1-bit grey PNG"),
    }


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


class _Opened:
    """A dataset opened once with its eval and train pipelines built once (building a train pipeline
    traces its decoding and augmentation, ~1 s each time). A case overwrites a label file in place
    and iterates the pipelines afresh: tf.data reads the files on each iteration, nothing is cached,
    so each case's file is what each reader meets."""

    def __init__(self, ds, path, raw):
        self.ds, self.path, self.raw = ds, path, raw
        self.index = [e[1] for e in ds.examples].index(path)
        self.eval = D.eval_source(ds)
        self.train = D.train_pipeline(ds, 5, len(ds), seed=0, shuffle=False, augment=AugmentConfig(CAFFE_MEAN_RGB))


def _assert_refused_everywhere(opened, message):
    """read(i) raises a UserError and the pipelines an InvalidArgumentError, all '<path>: <message>'."""
    expected = re.escape(f"{opened.path}: {message}")
    with pytest.raises(UserError, match=expected):
        opened.ds.read(opened.index)
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        list(opened.eval)
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        next(iter(opened.train))


def _check(argv, capsys):
    code = check_data.main(["psp-check-data", *argv])
    return code, capsys.readouterr().out


# ---- grey layouts: ADE20K, Cityscapes, folder ----

def _grey_layout(kind, root):
    """(dataset args, label path of example 0, raw values that file holds) for a grey-label layout."""
    if kind == "ade20k":
        base_dir = fx.write_ade(root, n_train=2)
        path = os.path.join(base_dir, "annotations", "training", "ADE_train_00000001.png")
        return ("ade20k", base_dir, "training", {}), path, np.roll(fx.ADE_RAW, 1, 1)
    if kind in ("cityscapes_labelIds", "cityscapes_labelTrainIds"):
        fx.write_cityscapes(root, train_ids_too=True)
        if kind == "cityscapes_labelIds":
            path = os.path.join(root, "gtFine", "train", "aachen", "aachen_000000_000019_gtFine_labelIds.png")
            return ("cityscapes", root, "train", {}), path, fx.CS_LABEL_IDS
        path = os.path.join(root, "gtFine", "train", "bremen", "bremen_000001_000019_gtFine_labelTrainIds.png")
        return ("cityscapes", root, "train", {}), path, fx.CS_TRAIN_IDS
    fx.write_folder(root)
    path = os.path.join(root, "labels", "train", "img0.png")
    return ("folder", root, "train", {"num_classes": 3}), path, fx.FOLDER_RAW


GREY_LAYOUTS = ["ade20k", "cityscapes_labelIds", "cityscapes_labelTrainIds", "folder"]


@pytest.fixture(scope="module")
def grey_layout(tmp_path_factory):
    """layout -> _Opened: each grey layout written and opened once for the module."""
    opened = {}

    def get(layout):
        if layout not in opened:
            (name, data_dir, split, options), path, raw = _grey_layout(layout, str(tmp_path_factory.mktemp(layout)))
            opened[layout] = _Opened(D.open_dataset(name, data_dir, split, **options), path, raw)
        return opened[layout]

    return get


@pytest.mark.parametrize("case", sorted(wrong_labels(fx.ADE_RAW)))
@pytest.mark.parametrize("layout", GREY_LAYOUTS)
def test_grey_layouts_refuse_every_other_kind_of_label_file(grey_layout, layout, case):
    opened = grey_layout(layout)
    image, what = wrong_labels(opened.raw)[case]
    write_png(opened.path, image)
    _assert_refused_everywhere(opened, f"{what}; {GREY_EXPECTED}")


@pytest.mark.parametrize("layout", GREY_LAYOUTS)
def test_grey_layouts_refuse_a_jpeg_named_png(grey_layout, layout):
    # tf.io.decode_png decodes JPEG bytes too: a lossy label would otherwise pass unnoticed.
    opened = grey_layout(layout)
    with open(opened.path, "wb") as f:
        f.write(cv2.imencode(".jpg", opened.raw)[1].tobytes())
    _assert_refused_everywhere(opened, f"not a PNG file; {GREY_EXPECTED}")


def test_ade20k_16bit_label_is_a_problem_for_the_check_tool(tmp_path, capsys):
    root = fx.write_ade(str(tmp_path), n_train=3)
    path = os.path.join(root, "annotations", "training", "ADE_train_00000002.png")
    values = np.arange(1, 151, dtype=np.uint16)[: fx.H * fx.W].reshape(fx.H, fx.W)  # ADE classes 1..48
    write_png(path, values)
    code, out = _check(["--dataset", "ade20k", "--data_dir", root, "--split", "training"], capsys)
    assert code == 1 and "problems: 1" in out
    assert f"  {path}: 16-bit grey PNG; {GREY_EXPECTED}" in out.splitlines()


def test_ade20k_grey_rgb_label_is_a_problem_for_the_check_tool(tmp_path, capsys):
    root = fx.write_ade(str(tmp_path), n_train=2)
    path = os.path.join(root, "annotations", "training", "ADE_train_00000001.png")
    grey = np.where(np.arange(fx.W) % 2, 128, 0).astype(np.uint8)[None].repeat(fx.H, 0)
    write_png(path, np.dstack([grey] * 3))  # once read as VOC palette indices {0, 7} -> train ids {255, 6}
    code, out = _check(["--dataset", "ade20k", "--data_dir", root, "--split", "training"], capsys)
    assert code == 1 and "problems: 1" in out
    assert f"  {path}: 8-bit RGB PNG; {GREY_EXPECTED}" in out.splitlines()


# ---- file lists: two files with one name ----

def test_folder_dataset_with_dup_jpg_and_dup_png_is_an_error(tmp_path, capsys):
    root = fx.write_folder(str(tmp_path), n=15)
    images = os.path.join(root, "images", "train")
    fx.write_image(os.path.join(images, "dup.jpg"), fx.image(20))
    fx.write_image(os.path.join(images, "dup.png"), fx.image(21))
    fx.write_grey(os.path.join(root, "labels", "train", "dup.png"), fx.FOLDER_RAW)
    message = (f"{os.path.join(images, 'dup.png')}: has the same name as {os.path.join(images, 'dup.jpg')} "
               f"(files are paired by name, so one of them would be dropped)")
    with pytest.raises(base.DataProblems, match=re.escape(message)):
        D.open_dataset("folder", root, "train", num_classes=3)
    code, out = _check(["--dataset", "folder", "--data_dir", root, "--split", "train", "--dataset_option",
                        "num_classes=3"], capsys)
    # The paired files are scanned all the same (dup.jpg, listed first, pairs with dup.png's label).
    assert code == 1 and out.splitlines()[0] == ("folder train: 16 images scanned of 16 paired (1 listing "
                                                 "problem below: those files are not scanned)")
    assert out.splitlines()[-2:] == ["problems: 1", f"  {message}"]
    # The flat layout (a stem list) pairs the same way.
    with open(os.path.join(root, "some.txt"), "w") as f:
        f.write("img0\n")
    for sub in ("images", "labels"):
        for name in os.listdir(os.path.join(root, sub, "train")):
            os.rename(os.path.join(root, sub, "train", name), os.path.join(root, sub, name))
    flat_dup = os.path.join(root, "images", "dup.png")
    with pytest.raises(UserError, match=re.escape(f"{flat_dup}: has the same name")):
        D.open_dataset("folder", root, "some", num_classes=3)


def test_every_listing_problem_is_listed_and_the_paired_files_scanned(tmp_path, capsys):
    root = fx.write_ade(str(tmp_path), n_train=4)
    images = os.path.join(root, "images", "training")
    fx.write_image(os.path.join(images, "ADE_train_00000001.png"), fx.image(1))
    os.remove(os.path.join(root, "annotations", "training", "ADE_train_00000003.png"))
    broken = os.path.join(root, "annotations", "training", "ADE_train_00000004.png")
    with open(broken, "wb") as f:  # a paired file the scan finds broken: named in the same run
        f.write(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UserError) as error:
        D.open_dataset("ade20k", root, "training")
    assert str(error.value).endswith("(and 1 more: psp-check-data lists them)")
    code, out = _check(["--dataset", "ade20k", "--data_dir", root, "--split", "training"], capsys)
    lines = out.splitlines()
    assert code == 1 and lines[0] == ("ade20k training: 3 images scanned of 3 paired (2 listing problems "
                                      "below: those files are not scanned)")
    problems = lines[lines.index("problems: 3") + 1:]
    assert problems[0].startswith(f"  {os.path.join(images, 'ADE_train_00000001.png')}: has the same name as ")
    assert problems[1].startswith(f"  {os.path.join(images, 'ADE_train_00000003.jpg')}: image has no label")
    assert problems[2].startswith(f"  {broken}: ") and len(problems) == 3
    # The two good pairs were scanned: their pixels are in the histogram (the ignored ones: 2 columns each).
    assert re.search(r"^\s+255\s+\(ignore 255\)\s+" + f"{2 * 2 * fx.H}" + r"\s", out, re.M)


def _unpair(layout, root):
    """Writes `layout` with listing problems; returns (check args, the problem lines, paired count)."""
    if layout == "cityscapes":
        fx.write_cityscapes(root)
        label = os.path.join(root, "gtFine", "train", "bremen", "bremen_000001_000019_gtFine_labelIds.png")
        os.remove(label)
        image = os.path.join(root, "leftImg8bit", "train", "bremen", "bremen_000001_000019_leftImg8bit.png")
        return (["--dataset", "cityscapes", "--data_dir", root, "--split", "train"],
                [f"{image}: image has no label (expected bremen/bremen_000001_000019_gtFine_labelIds.png in "
                 f"{os.path.join(root, 'gtFine', 'train')})"], 1)
    if layout == "voc2012":
        voc = fx.write_voc(root, train=("2007_000001", "2007_000002", "2007_000004"))
        gone = [os.path.join(voc, "SegmentationClass", "2007_000002.png"),
                os.path.join(voc, "JPEGImages", "2007_000004.jpg")]
        for path in gone:
            os.remove(path)
        return (["--dataset", "voc2012", "--data_dir", root, "--split", "train"],
                [f"{path}: listed in the split but not found" for path in gone], 1)
    fx.write_folder(root, n=3)  # the flat layout: a stem list naming files that are not there
    for sub in ("images", "labels"):
        for name in os.listdir(os.path.join(root, sub, "train")):
            os.rename(os.path.join(root, sub, "train", name), os.path.join(root, sub, name))
    with open(os.path.join(root, "some.txt"), "w") as f:
        f.write("img0\nnope1\nimg2\nnope2\n")
    listing = os.path.join(root, "some.txt")
    return (["--dataset", "folder", "--data_dir", root, "--split", "some", "--dataset_option", "num_classes=3"],
            [f"{listing}: nope{k} has no image in {os.path.join(root, 'images')}" for k in (1, 2)], 2)


@pytest.mark.parametrize("layout", ["cityscapes", "voc2012", "folder_list"])
def test_every_layout_lists_its_listing_problems_and_scans_the_rest(layout, tmp_path, capsys):
    args, expected, paired = _unpair(layout, str(tmp_path))
    name, data_dir, split = args[1], args[3], args[5]
    options = {"num_classes": 3} if name == "folder" else {}
    with pytest.raises(base.DataProblems) as error:  # every other user of a reader: no partial split
        D.open_dataset(name, data_dir, split, **options)
    assert error.value.problems == expected
    code, out = _check(args, capsys)
    lines = out.splitlines()
    assert code == 1 and lines[0].startswith(f"{name} {split}: {paired} images scanned of {paired} paired (")
    assert lines[-len(expected) - 1:] == [f"problems: {len(expected)}"] + [f"  {p}" for p in expected]


def test_a_split_where_nothing_pairs_lists_every_file_and_scans_nothing(tmp_path, capsys):
    root = fx.write_ade(str(tmp_path), n_train=2)
    labels = os.path.join(root, "annotations", "training")
    shutil.rmtree(labels)
    os.makedirs(labels)
    code, out = _check(["--dataset", "ade20k", "--data_dir", root, "--split", "training"], capsys)
    lines = out.splitlines()
    assert code == 1 and lines[0] == "ade20k training: nothing scanned, the split's file list has problems"
    assert lines[1] == "problems: 3" and len(lines) == 5
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines[2:4]] == ["image has no label"] * 2
    assert lines[4] == f"  {os.path.join(root, 'images', 'training')}: split 'training' of ade20k is empty"


# ---- VOC: palette PNGs and their colours ----

@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """VOC 2012 train opened once (_Opened); each test below writes label 0 (2007_000001) itself."""
    root = tmp_path_factory.mktemp("voc")
    path = os.path.join(fx.write_voc(str(root)), "SegmentationClass", "2007_000001.png")
    return _Opened(D.open_dataset("voc2012", str(root), "train"), path, fx.VOC_RAW)


def _voc_colours(indices):
    return np.array([classes.voc_palette_color(i) for i in range(256)], np.uint8)[indices]


@pytest.mark.parametrize("case", ["palette", "rgb_palette_colours", "grey_indices"])
def test_voc_reads_the_indices_of_every_accepted_kind(voc, case):
    if case == "palette":  # the official kind, as fx.write_voc writes it
        fx.write_voc_png(voc.path, fx.VOC_RAW)
    elif case == "rgb_palette_colours":  # a palette PNG re-saved as plain RGB by some tool
        write_png(voc.path, _voc_colours(fx.VOC_RAW)[..., ::-1])
    elif case == "grey_indices":  # the indices stored as grey (as DeepLab's SegmentationClassAug)
        write_png(voc.path, fx.VOC_RAW)
    np.testing.assert_array_equal(voc.ds.read(0)[1], fx.VOC_RAW)
    np.testing.assert_array_equal(next(iter(voc.eval))[1].numpy(), fx.VOC_RAW)


def test_voc_refuses_colours_that_are_not_in_the_palette(voc):
    path, ds = voc.path, voc.ds
    rgb = _voc_colours(fx.VOC_RAW)
    rgb[2, 3] = (1, 2, 3)  # one off-palette pixel
    write_png(path, rgb[..., ::-1])
    with pytest.raises(UserError, match=re.escape(f"{path}: colours [(1, 2, 3)] are not in the VOC palette")):
        ds.read(0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(f"{path}: label values outside")):
        list(voc.eval)
    # A palette PNG with another palette: its colours are not VOC's either, so it is refused too.
    other = [(255 - i, i, 0) for i in range(256)]
    write_png(path, _palette_image(fx.VOC_RAW, other))
    with pytest.raises(UserError, match=re.escape(f"{path}: colours [(0, 255, 0), (235, 20, 0)")):
        ds.read(0)


@pytest.mark.parametrize("case", ["16bit", "rgba", "grey_alpha", "1bit_grey"])
def test_voc_refuses_other_kinds(voc, case):
    rgb = _voc_colours(fx.VOC_RAW)[..., ::-1]
    image, what = {
        "16bit": (fx.VOC_RAW.astype(np.uint16), "16-bit grey PNG"),
        "rgba": (np.dstack([rgb, np.full(fx.VOC_RAW.shape, 255, np.uint8)]), "8-bit RGBA PNG"),
        "grey_alpha": (Image.fromarray(np.dstack([fx.VOC_RAW, fx.VOC_RAW]), "LA"), "8-bit grey+alpha PNG"),
        "1bit_grey": (Image.fromarray(fx.VOC_RAW > 0), "1-bit grey PNG"),
    }[case]
    write_png(voc.path, image)
    _assert_refused_everywhere(voc, f"{what}; {VOC_EXPECTED}")


@pytest.mark.parametrize("segmentation,what", [(np.full((fx.H, fx.W), 300, np.uint16), "uint16"),
                                               (np.ones((fx.H, fx.W)), "float64")])
def test_sbd_mat_that_is_not_uint8_indices_is_refused(tmp_path, segmentation, what):
    # 300 was clipped to 255 (ignore) before; a float array was truncated.
    ids = ["2008_000001", "2008_000002", "2008_000003"]
    fx.write_voc(str(tmp_path), train=ids[:1], val=ids[2:], sbd_only=ids[1:2])
    fx.write_sbd(str(tmp_path), train=ids[1:2], val=ids[1:2])
    path = str(tmp_path / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000002.mat")
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation}})
    ds = D.open_dataset("voc_aug", str(tmp_path), "train_aug")
    with pytest.raises(UserError, match=re.escape(f"{path}: GTcls.Segmentation is {what}")):
        ds.read(1)


# ---- TFRecords ----

def test_tfrecord_writer_refuses_such_labels_and_leaves_nothing(tmp_path, capsys):
    root = fx.write_ade(str(tmp_path / "ade"), n_train=3)
    path = os.path.join(root, "annotations", "training", "ADE_train_00000003.png")
    write_png(path, np.roll(fx.ADE_RAW, 3, 1).astype(np.uint16))
    out = tmp_path / "records"
    code = write_tfrecords.main(["psp-write-tfrecords", "--dataset", "ade20k", "--data_dir", root, "--split",
                                 "training", "--output", str(out / "training"), "--num_shards", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert _error_lines(err) == [f"error: {path}: 16-bit grey PNG; {GREY_EXPECTED}"]
    assert not out.exists() or os.listdir(out) == []


def test_tfrecord_reader_uses_the_same_label_decoder(tmp_path):
    """A record whose label is not the writer's 8-bit grey PNG (an older or foreign writer) is refused."""
    rgb_label = tf.io.encode_png(np.zeros((fx.H, fx.W, 3), np.uint8)).numpy()
    image = tf.io.encode_png(fx.image(0)).numpy()
    feature = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))  # noqa: E731
    record = tf.train.Example(features=tf.train.Features(feature={
        "image": feature(image), "label": feature(rgb_label), "name": feature(b"img0")})).SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=re.escape(f"TFRecord example img0: 8-bit RGB PNG; {GREY_EXPECTED}")):
        tfrecords.parse_record(tf.constant(record), True)


# ---- train.py and evaluate.py: one error line naming the file ----
# In-process through each driver's main (the flags, the library call and the one `error:` line of
# psp_tf.cli.driver; train's InvalidArgumentError -> UserError too): the real entry points' exit
# status and stderr as processes are tests/cli's one smoke test per tool (issue 11).

def _main(driver, argv, capsys):
    capsys.readouterr()
    code = driver.main(argv)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def bad_ade(tmp_path_factory):
    """ADE20K layout whose training label 2 is 16-bit and validation label 1 is RGB."""
    root = str(tmp_path_factory.mktemp("bad_ade"))
    base_dir = fx.write_ade(root, n_train=2, n_val=2)
    bad = {}
    for split, stem, image in (("training", "ADE_train_00000002", fx.ADE_RAW.astype(np.uint16)),
                               ("validation", "ADE_val_00000001", np.dstack([fx.ADE_RAW] * 3))):
        bad[split] = os.path.join(base_dir, "annotations", split, stem + ".png")
        write_png(bad[split], image)
    return base_dir, bad


@pytest.mark.slow  # ~12 s quiet: the error surfaces inside the traced train step, which is built first
def test_train_stops_with_one_line_naming_the_label(bad_ade, tmp_path, capsys):
    from psp_tf.cli import train

    root, bad = bad_ade
    code, err = _main(train, ["train.py", "--dataset", "ade20k", "--data_dir", root, "--split", "training",
                              "--workdir", str(tmp_path / "run"), "--steps", "2", "--batch_size", "2",
                              "--crop_size", "41"], capsys)
    assert code == 2, err[-2000:]
    assert _error_lines(err) == [f"error: {bad['training']}: 16-bit grey PNG; {GREY_EXPECTED}"]
    assert "Traceback" not in err


@pytest.mark.slow  # ~2 s quiet: a tiny PSPNet built, saved, loaded and its evaluation step traced
def test_evaluate_stops_with_one_line_naming_the_label(bad_ade, tmp_path, capsys):
    import psp_tf
    from psp_tf.cli import evaluate
    from support.weights import write_weights_dir

    root, bad = bad_ade
    weights = write_weights_dir(psp_tf.build_pspnet("tiny", num_classes=150), str(tmp_path / "weights"))
    code, err = _main(evaluate, ["evaluate.py", "--weights", weights, "--dataset", "ade20k", "--data_dir", root,
                                 "--split", "validation", "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2, err[-2000:]
    assert _error_lines(err) == [f"error: {bad['validation']}: 8-bit RGB PNG; {GREY_EXPECTED}"]
    assert not (tmp_path / "out").exists()
