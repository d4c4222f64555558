"""What evaluate.py writes and prints: author numbering, Cityscapes labelIds, colour PNGs, progress,
the per-class table, the confusion matrix drawn, --expect paper."""

import types

import cv2
import numpy as np
import pytest

from psp_tf import presets, visualize
from psp_tf.errors import UserError
from psp_tf.evaluation import metrics, report, run


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


def test_table_lists_every_class():
    s = metrics.summarize(np.array([[1, 0], [0, 1]]), ["road", "sky"])
    table = report.format_table(s)
    assert "road" in table and "sky" in table and "mIoU 100.00" in table


# Ground truth: road 4 (3 right, 1 as car), car 3 (2 right, 1 as bus); sky in neither; bus only predicted.
SUBSET = np.array([[3, 0, 1, 0],
                   [0, 0, 0, 0],
                   [0, 0, 2, 1],
                   [0, 0, 0, 0]])
SUBSET_NAMES = ["road", "sky", "car", "bus"]


def test_table_marks_absent_classes_and_adds_the_present_class_miou():
    summary = metrics.summarize(SUBSET, SUBSET_NAMES)
    iou = {"road": 3 / 4, "car": 2 / 4, "bus": 0.0}
    # mmseg's nan-mean: sky (no pixel anywhere) is NaN and skipped; bus (predicted, not labelled) counts 0.
    assert summary["present_classes"] == 3
    assert summary["mean_iou_present"] == pytest.approx(100 * np.mean(list(iou.values())))
    # The author's headline over all four classes is unchanged: sky counts 0.
    assert summary["mean_iou"] == pytest.approx(100 * sum(iou.values()) / 4)
    assert summary["per_class_iou"]["sky"] == 0.0 and summary["per_class_labelled_pixels"]["bus"] == 0
    lines = report.format_table(summary).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:5]}
    assert rows == {"road": ["75.00", "75.00"], "sky": ["–", "–"], "car": ["50.00", "66.67"], "bus": ["0.00", "–"]}
    assert lines[5].startswith(f"mIoU {summary['mean_iou']:.2f}  pixel accuracy")
    assert lines[6] == ("mIoU over the 3 classes present in ground truth or prediction (mmseg's nan-mean; "
                        f"1 absent, marked –): {100 * np.mean(list(iou.values())):.2f}")


def test_table_of_an_empty_evaluation_has_no_present_line():
    summary = metrics.summarize(np.zeros((2, 2), np.int64), ["road", "sky"])
    assert summary["mean_iou_present"] is None
    assert "mmseg" not in report.format_table(summary)


def test_confused_pairs_largest_share_first():
    pairs = report.confused_pairs(SUBSET, SUBSET_NAMES)
    assert pairs == [("car", "bus", 1, pytest.approx(1 / 3)), ("road", "car", 1, 0.25)]
    confusion = np.array([[90, 10, 0], [30, 60, 10], [0, 0, 5]])
    pairs = report.confused_pairs(confusion, ["a", "b", "c"], top=2)
    assert pairs == [("b", "a", 30, 0.3), ("a", "b", 10, 0.1)]  # then b -> c (10, 0.1): cut by top=2
    text = report.format_confused_pairs(pairs)
    assert text.splitlines()[2].split() == ["b", "a", "30.00%", "30"]
    assert report.format_confused_pairs([]) == "no confused pixels"


def test_write_confusion_outputs(tmp_path):
    text = report.write_confusion_outputs(str(tmp_path), SUBSET, SUBSET_NAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confused_pairs.png", "confused_pairs.txt",
                                                         "confusion_matrix.png"]
    assert (tmp_path / "confused_pairs.txt").read_text() == text + "\n" and "road" in text
    matrix = cv2.imread(str(tmp_path / "confusion_matrix.png"))[..., ::-1]
    np.testing.assert_array_equal(matrix, visualize.confusion_image(SUBSET, SUBSET_NAMES))
    assert cv2.imread(str(tmp_path / "confused_pairs.png")).shape[0] == visualize.TITLE_HEIGHT + 2 * 20


def test_no_matrix_image_beyond_forty_classes(tmp_path):
    k = visualize.MAX_MATRIX_CLASSES + 1
    confusion = np.eye(k, dtype=np.int64) * 10 + np.roll(np.eye(k, dtype=np.int64), 1, axis=1)
    text = report.write_confusion_outputs(str(tmp_path), confusion, [f"c{i}" for i in range(k)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confused_pairs.png", "confused_pairs.txt"]
    assert len(text.splitlines()) == 2 + report.TOP_CONFUSED_PAIRS
    bars = cv2.imread(str(tmp_path / "confused_pairs.png"))
    assert bars.shape[0] == visualize.TITLE_HEIGHT + 20 * report.TOP_CONFUSED_PAIRS
