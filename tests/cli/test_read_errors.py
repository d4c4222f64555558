"""Reading a broken input ends in one `error:` line naming the file (exit 2), never a traceback, and
TensorFlow's or OpenCV's own log lines never reach the terminal."""

import dataclasses
import importlib
import json
import os
import re
import shutil
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from support import REPO
from support import datasets as fx
from support.cli import run_in_turn
from support.weights import write_weights_dir
from psp_tf.cli import driver
from psp_tf.errors import UserError

from psp_tf.cli import check_data, write_tfrecords  # noqa: E402
from psp_tf.cli import predict as predict_driver  # noqa: E402

pytestmark = pytest.mark.heavy(25)


def _predict_main(argv):
    sys.exit(predict_driver.main(["psp-predict", *argv]))  # a driver returns its status


def _run_main(main, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def _run_driver(main, argv, capsys):
    """A psp_tf.cli driver, in-process: (exit status, stderr)."""
    return main(["tool", *argv]), capsys.readouterr().err


def _one_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


# ---------------------------------------------------------------- --weights

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import psp_tf

    root = tmp_path_factory.mktemp("weights")
    good = write_weights_dir(psp_tf.build_pspnet("tiny"), str(root / "good"))
    five = write_weights_dir(psp_tf.build_pspnet("tiny", num_classes=5), str(root / "five"))
    images = root / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((20, 30, 3), np.uint8))
    return {"root": root, "good": good, "five": five, "images": str(images)}


def _broken_weights(weights, name, content):
    path = str(weights["root"] / name)
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(weights["good"], path)
    with open(os.path.join(path, "model.weights.h5"), "wb") as f:
        f.write(content(weights))
    return path


WEIGHT_FILES = {
    "empty": lambda w: b"",
    "truncated": lambda w: open(os.path.join(w["good"], "model.weights.h5"), "rb").read()[:20000],
    "garbage": lambda w: np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes(),
    "five_classes": lambda w: open(os.path.join(w["five"], "model.weights.h5"), "rb").read(),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_FILES))
def test_broken_or_mismatched_weights_are_one_line(weights, name, tmp_path, capsys):
    path = _broken_weights(weights, name, WEIGHT_FILES[name])
    out = tmp_path / "out"
    code, err = _run_main(_predict_main, ["--weights", path, "--input", weights["images"],
                                             "--output", str(out)], capsys)
    line = _one_error(code, err)
    assert os.path.join(path, "model.weights.h5") in line and not out.exists()
    if name == "five_classes":  # the layer and both shapes, not Keras' dump of the tensor
        assert "layer conv6 holds shape (1, 1, 32, 5) in the file, the model needs (1, 1, 32, 4)" in line


# ---------------------------------------------------------------- TFRecord sets in the check tool

@pytest.fixture
def records(tmp_path):
    root = fx.write_folder(str(tmp_path / "folder"), n=4)
    prefix = str(tmp_path / "rec" / "train")
    dataset = importlib.import_module("psp_tf.data").open_dataset("folder", root, "train", num_classes=3)
    importlib.import_module("psp_tf.data.tfrecords").write_tfrecords(dataset, prefix, 1, progress=False)
    return prefix


def _check(records, capsys):
    return _run_driver(check_data.main, ["--dataset", "tfrecord", "--data_dir", os.path.dirname(records),
                                  "--split", "train"], capsys)


def _edit_json(prefix, change):
    with open(prefix + ".json") as f:
        meta = json.load(f)
    change(meta)
    with open(prefix + ".json", "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("damage,expected", [
    (lambda p: open(p + ".json", "w").write("{not json"), "not valid JSON"),
    (lambda p: open(p + ".json", "w").write("[]"), "not TFRecord metadata"),
    (lambda p: _edit_json(p, lambda m: m.pop("shards")), "'shards' is missing"),
    (lambda p: _edit_json(p, lambda m: m["shards"][0].update(count="4")), "shards[0] is not"),
    (lambda p: _edit_json(p, lambda m: m["shards"][0].update(file="../../etc/passwd")), "is not a plain file name"),
    (lambda p: _edit_json(p, lambda m: m["shards"][0].update(count=3)), "its shards hold 3 records"),
], ids=["invalid", "not_object", "no_shards", "count_type", "file_outside", "counts_disagree"])
def test_bad_tfrecord_metadata_is_one_line(records, damage, expected, capsys):
    damage(records)
    line = _one_error(*_check(records, capsys))
    assert records + ".json" in line and expected in line


@pytest.mark.parametrize("cut", ["record_boundary", "mid_record", "flipped_byte"])
def test_truncated_or_corrupt_shard_is_one_line_naming_it(records, cut, capsys):
    shard = records + "-00000-of-00001.tfrecord"
    data = open(shard, "rb").read()
    first = 12 + int.from_bytes(data[:8], "little") + 4  # one record: length, crc, data, crc
    if cut == "record_boundary":  # TensorFlow reads the 2 records left without a word
        data = data[:2 * first]
    elif cut == "mid_record":
        data = data[:2 * first + 20]
    else:
        data = data[:first + 30] + bytes([data[first + 30] ^ 0xFF]) + data[first + 31:]
    with open(shard, "wb") as f:
        f.write(data)
    line = _one_error(*_check(records, capsys))
    assert shard in line and ("truncated" in line or "corrupt" in line)
    if cut != "flipped_byte":  # train.py and evaluate.py open the set the same way
        with pytest.raises(UserError, match=re.escape(shard) + ": truncated or damaged: it holds 2 whole"):
            importlib.import_module("psp_tf.data").open_dataset("tfrecord", os.path.dirname(records), "train")


def test_write_tfrecords_to_a_read_only_place_is_one_line(tmp_path, capsys):
    root = fx.write_folder(str(tmp_path / "folder"), n=2)
    if os.geteuid() == 0:
        place = "/sys"  # root writes through file modes; sysfs refuses everyone
    else:
        place = str(tmp_path / "ro")
        os.makedirs(place)
        os.chmod(place, 0o555)
    code, err = _run_driver(write_tfrecords.main, ["--dataset", "folder", "--data_dir", root, "--split", "train",
                                                 "--dataset_option", "num_classes=3", "--quiet",
                                                 "--output", os.path.join(place, "psp_tf_test_train")], capsys)
    line = _one_error(code, err)
    assert "--output" in line and "cannot write" in line
    assert not [n for n in os.listdir(place) if n.startswith("psp_tf_test_train")]


# ---------------------------------------------------------------- memory

def test_scales_too_large_for_the_memory_are_refused_up_front(weights, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run_main(_predict_main, ["--weights", weights["good"], "--input", weights["images"],
                                             "--output", str(out), "--scales", "1.0,1000"], capsys)
    line = _one_error(code, err)
    assert line.startswith("error: --scales: scale 1000 resizes images to a long side of 160001 px")
    assert not out.exists()


def test_scale_bound_is_the_score_map_of_a_square_image():
    from psp_tf.evaluation.protocol import check_scale_memory

    # base 512, scale 1: a 513 px side; 150 classes x 4 bytes per pixel = 157,893,400 bytes.
    check_scale_memory([1.0], 512, 150, memory=513 * 513 * 600)
    with pytest.raises(UserError, match=r"scale 1 resizes images to a long side of 513 px"):
        check_scale_memory([1.0], 512, 150, memory=513 * 513 * 600 - 1)
    # Few classes: the float64 RGB image (24 bytes per pixel) is the larger buffer.
    check_scale_memory([2.0], 512, 2, memory=1025 * 1025 * 24)
    with pytest.raises(UserError, match=r"need 54.1 MiB .* has 24.0 MiB \(the largest scale that fits is 2\)"):
        check_scale_memory([1.0, 3.0], 512, 2, memory=1025 * 1025 * 24)


@pytest.mark.parametrize("error", [MemoryError(), tf.errors.ResourceExhaustedError(
    None, None, "OOM when allocating tensor with shape[160001,160001,3] and type double on CPU")])
def test_out_of_memory_is_one_line(error, capsys):
    """Through the drivers' one runner: whichever tool runs out of memory, the same line."""
    @dataclasses.dataclass(frozen=True)
    class NoSettings:
        pass

    def body(config):
        raise error

    code = driver.run("A tool.", NoSettings, flags.FlagValues(), body, ["tool"])
    line = _one_error(code, capsys.readouterr().err)
    assert "out of memory" in line
    if isinstance(error, tf.errors.ResourceExhaustedError):
        assert "shape[160001,160001,3]" in line


# ---------------------------------------------------------------- noise

# OpenCV's own log silenced by the tools (a broken image is one error line from a fresh process):
# test_predict.py::test_the_tool_as_a_subprocess_writes_psp_tf_predict_labels, its first run.


NOISE = re.compile(r"^[IWEF]\d{4} |WARN|Traceback|UserWarning", re.M)

@pytest.mark.slow
def test_train_and_evaluate_runs_print_no_library_noise(tmp_path):
    """TensorFlow's C++ log lines (e.g. Grappler's 'topological sort failed', which a cond around
    imresize's while_loops caused in every evaluation) and Python warnings stay off the terminal; a bad
    flag after TensorFlow started is one `error:` line, exit 2, nothing written.

    One interpreter runs `python evaluate.py` (no --weights: TensorFlow starts in this fresh process,
    through the drivers' one start, psp_tf.startup), then `python train.py ...` and `python evaluate.py
    ...` (support/cli.py: each run's stderr checked on its own; one TensorFlow import instead of three).
    """
    root = str(tmp_path / "data")
    fx.write_folder(root, "train", n=2)
    fx.write_folder(root, "val", n=1)
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell: the tools set their own level
    common = ["--dataset", "folder", "--data_dir", root, "--dataset_option", "num_classes=3"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # A truncated JPEG: libjpeg's "Premature end of JPEG data" is a TensorFlow C++ ERROR line per try.
    broken = str(tmp_path / "broken")
    fx.write_folder(broken, "train", n=1)
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with open(os.path.join(broken, "images", "train", "img0.jpg"), "wb") as f:
        f.write(jpeg.tobytes()[:len(jpeg) // 2])
    os.remove(os.path.join(broken, "images", "train", "img0.png"))
    runs = run_in_turn([
        [os.path.join(REPO, "evaluate.py")],
        # --crop_size 41 (the tiny net's smallest whose feature map divides into its bins): the images are 6x8
        [os.path.join(REPO, "train.py"), *common, "--workdir", tmp_path / "run", "--steps", "2",
         "--batch_size", "2", "--eval_split", "val", "--crop_size", "41"],
        [os.path.join(REPO, "evaluate.py"), *common, "--split", "val", "--weights", tmp_path / "run" / "model"],
        ["-m", "psp_tf.cli.write_tfrecords", "--dataset", "folder", "--data_dir", broken, "--split", "train",
         "--dataset_option", "num_classes=3", "--output", tmp_path / "shards" / "train"],
    ], env=env, cwd=cwd)
    refused, train, evaluate, truncated = runs.stderr
    assert runs.codes[3] == 2 and truncated.count("\n") == 1, truncated
    assert truncated.startswith(f"error: {broken}/images/train/img0.jpg: cannot decode image"), truncated
    assert runs.codes[0] == 2 and refused.count("\n") == 1, refused  # one line (test_errors.py, in-process)
    assert refused.startswith("error: --weights is required"), refused
    assert runs.codes[1:3] == [0, 0], "\n".join(runs.stderr)[-3000:]
    assert "mIoU" in runs.stdout  # the training evaluated, and evaluate.py scored
    assert not NOISE.findall(train), train[-3000:]
    assert not NOISE.findall(evaluate), evaluate[-3000:]
    assert os.listdir(cwd) == []
