"""What evaluate.py writes: author numbering, Cityscapes labelIds, colour PNGs, progress, --expect paper."""

import io
import types

import cv2
import numpy as np
import pytest

from psp_tf import presets, visualize
from psp_tf.errors import UserError
from psp_tf.evaluation import report, run


def _dataset(name, k, palette):
    return types.SimpleNamespace(name=name, names=["frankfurt_000000_000294_leftImg8bit", "b"],
                                 palette=palette, num_classes=k)


def test_author_numbering():
    labels = np.array([[0, 149], [5, 0]])
    np.testing.assert_array_equal(report.author_numbering(labels, "ade20k"), [[1, 150], [6, 1]])
    np.testing.assert_array_equal(report.author_numbering(labels[:1, :1], "voc2012"), [[0]])


def test_cityscapes_writer_labelids_and_colours(tmp_path):
    config = presets.get_preset("pspnet101_cityscapes")
    writer = report.PredictionWriter(str(tmp_path), _dataset("cityscapes", 19, config.palette), True)
    labels = np.arange(19).reshape(1, 19)
    writer(0, labels)
    name = "frankfurt_000000_000294_leftImg8bit.png"
    pred = cv2.imread(str(tmp_path / "predictions" / name), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(pred, labels)  # trainIds, as eval_sub.m writes them
    sub = cv2.imread(str(tmp_path / "submission" / name), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sub[0], [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
                                           31, 32, 33])
    colour = cv2.imread(str(tmp_path / "color" / name))[..., ::-1]
    np.testing.assert_array_equal(colour[0, 0], (128, 64, 128))  # road
    np.testing.assert_array_equal(colour[0, 18], (119, 11, 32))  # bicycle


def test_ade_writer_is_one_based(tmp_path):
    config = presets.get_preset("pspnet50_ade20k")
    writer = report.PredictionWriter(str(tmp_path), _dataset("ade20k", 150, config.palette))
    writer(1, np.array([[0, 149]]))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "predictions" / "b.png"), cv2.IMREAD_UNCHANGED),
                                  [[1, 150]])


def test_colorize_ignore_is_black():
    mask = visualize.colorize(np.array([[0, 1, 255]]), [(1, 2, 3), (4, 5, 6)])
    np.testing.assert_array_equal(mask[0], [(1, 2, 3), (4, 5, 6), (0, 0, 0)])


def test_progress_bar_has_eta():
    stream = io.StringIO()
    bar = report.Progress(stream)
    bar(1, 4)
    bar(4, 4)
    text = stream.getvalue()
    assert "1/4" in text and "4/4" in text and "ETA" in text and text.endswith("\n")


def test_paper_figures():
    ade = presets.get_preset("pspnet50_ade20k")
    assert report.paper_figure(ade, "ade20k", "validation", (1.0,)) == (41.68, 80.04)
    assert report.paper_figure(ade, "ade20k", "validation", (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)) == (42.78, 80.76)
    with pytest.raises(UserError, match="1.0 or ms"):
        report.paper_figure(ade, "ade20k", "validation", (0.5, 1.0))
    with pytest.raises(UserError, match="split"):
        report.paper_figure(ade, "ade20k", "training", (1.0,))
    voc = presets.get_preset("pspnet101_voc2012")
    with pytest.raises(UserError):
        report.paper_figure(voc, "voc2012", "test", (1.0,))  # only a multi-scale figure exists
    text, ok = report.compare_with_paper({"mean_iou": 41.5, "pixel_accuracy": 80.0}, (41.68, 80.04), 0.3)
    assert ok and "-0.18" in text
    text, ok = report.compare_with_paper({"mean_iou": 41.0, "pixel_accuracy": 80.0}, (41.68, 80.04), 0.3)
    assert not ok and "-0.68" in text


def test_tpu_strategy_without_a_tpu_is_a_user_error():
    with pytest.raises(UserError, match="--strategy tpu"):
        run.make_strategy("tpu", "no-such-tpu-here")
