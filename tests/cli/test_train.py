"""train.py as users run it: one-line errors before anything starts, and an end-to-end run through the
real data pipeline (ADE20K layout written here), evaluation, TFRecords, bf16 and the exported model."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import REPO
from support.cli import run_in_turn
from support.events import read_images

from psp_tf.cli import train as train_cli

pytestmark = pytest.mark.heavy(90)


class Done:
    """What a finished train.py left (as subprocess.CompletedProcess has it)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_train(capsys):
    """train.py's main in-process: `run_train(*args)` -> Done of `python train.py ARGS`."""

    def run(*args):
        capsys.readouterr()
        code = train_cli.main(["train.py", *args])
        captured = capsys.readouterr()
        return Done(code, captured.out, captured.err)

    return run


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_help_exits_0_before_tensorflow_loads_and_lists_the_presets():
    # The one real process of train.py: the 3-line shim, the driver, --help before TensorFlow loads.
    code = ("import runpy, sys\nsys.argv = ['train.py', '--help']\ntry:\n"
            "    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n"
            "    print('EXIT', e.code, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert done.stdout.splitlines()[-1] == "EXIT 0 False", done.stderr[-2000:]
    assert "--preset=<pspnet101_cityscapes|pspnet101_voc2012|pspnet50_ade20k|tiny>" in done.stdout
    assert "runs/<preset>_<dataset>" in done.stdout and "'none': train without evaluating" in done.stdout
    assert "\n    python train.py --preset pspnet50_ade20k" in done.stdout  # the docstring's lines kept


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps=0 must be a positive integer"),
    (["--bogus", "1"], "error: Unknown command line flag 'bogus'"),
    (["--preset", "nope"], "--preset"),
    (["--crop_size", "abc"], "--crop_size='abc'"),
    (["--eval_max_images", "0"], "--eval_max_images=0"),
    (["--steps_per_execution", "0"], "--steps_per_execution=0"),
])
def test_bad_flags_are_one_line_errors_before_anything_is_written(tmp_path, args, message, run_train):
    # (Every other bad or contradicting value: tests/training/test_units.py, in-process.)
    workdir = str(tmp_path / "run")
    done = run_train("--workdir", workdir, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not os.path.exists(workdir)


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory):
    """A 3 + 2 image ADEChallengeData2016 tree: shapes of classes 1..3 (ids 0..2) on 'other' (0)."""
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    for split, count in (("training", 3), ("validation", 2)):
        os.makedirs(root / "images" / split)
        os.makedirs(root / "annotations" / split)
        for i in range(count):
            label = np.zeros((96, 120), np.uint8)
            label[10:60, 20:70] = 1 + i % 3
            label[50:90, 60:110] = 2
            image = rng.integers(0, 255, (96, 120, 3), np.uint8)
            image[label == 2] = (200, 40, 40)
            stem = f"ADE_{split[:5]}_{i:08d}"
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), image[..., ::-1])
            cv2.imwrite(str(root / "annotations" / split / f"{stem}.png"), label)
    return str(root)


@pytest.mark.slow
def test_end_to_end_every_training_flag(ade_dir, tmp_path, run_train):
    workdir = str(tmp_path / "run")
    args = ["--preset", "tiny", "--dataset", "ade20k", "--data_dir", ade_dir, "--split", "training",
            "--eval_split", "validation", "--init", "none", "--workdir", workdir, "--steps", "4",
            "--batch_size", "2", "--crop_size", "41", "--lr", "0.02", "--poly_power", "1.0", "--momentum", "0.5",
            "--head_lr_mult", "5", "--weight_decay", "1e-3", "--aux_weight", "0.2", "--nosync_bn",
            "--nofreeze_bn", "--mixed_precision", "bf16", "--strategy", "default", "--checkpoint_every", "2",
            "--keep_checkpoints", "1", "--eval_every", "2", "--seed", "3", "--eval_max_images", "1",
            "--steps_per_execution", "3", "--nojit_compile"]
    done = run_train(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "evaluation at step 2: mIoU" in out and "step 4/4" in out and "wall" in out  # ADE class table
    assert "evaluating 1/1" in out and "ETA" in out  # --eval_max_images 1 of the 2 validation images
    assert "mIoU " in out.splitlines()[-1] and "after 4 steps" in out.splitlines()[-1]
    saved = json.load(open(os.path.join(workdir, "train_config.json")))
    for key, value in dict(dataset="ade20k", split="training", eval_split="validation", steps=4, batch_size=2,
                           crop_size=[41, 41], lr=0.02, poly_power=1.0, momentum=0.5, head_lr_mult=5.0,
                           weight_decay=1e-3, aux_weight=0.2, mixed_precision="bf16", seed=3).items():
        assert saved[key] == value, key
    # The resolved record: the network that trained (the data's label space, the crop) and its augmentation
    # with that network's mean; the model directory holds the same network.
    assert saved["network"]["num_classes"] == 150 and saved["network"]["crop_size"] == [41, 41]
    assert saved["network"]["class_names"][0] == "wall" and saved["steps_per_execution"] == 3
    assert saved["augment"]["mean"] == saved["network"]["mean"] == [123.68, 116.779, 103.939]
    assert saved["augment"]["scale_range"] == [0.5, 2.0] and saved["jit_compile"] is False
    assert os.listdir(os.path.join(workdir, "checkpoints")).count("ckpt-4.index") == 1
    # TensorBoard shows the validation images with ground truth and prediction at each evaluation.
    images = read_images(os.path.join(workdir, "tensorboard"))
    assert sorted(images) == ["eval_images/00_ADE_valid_00000000"]  # --eval_max_images 1: one image scored
    assert [step for step, _ in images["eval_images/00_ADE_valid_00000000"]] == [2, 4]
    panel = images["eval_images/00_ADE_valid_00000000"][0][1]
    assert panel.shape[0] == 2 * (96 + 18) and panel.shape[1] > 2 * 120  # 2x2 cells and a legend
    meta = json.load(open(os.path.join(workdir, "model", "config.json")))
    assert meta["num_classes"] == 150 and meta["crop_size"] == [41, 41] and meta["class_names"][0] == "wall"
    assert meta["config"] == saved["network"]
    # A rerun with the same flags finds the finished run: nothing to train, same evaluation.
    again = run_train(*args)
    assert again.returncode == 0 and "resumed from" in again.stdout and "step 1/4" not in again.stdout
    # Changing the recipe on the same workdir is refused.
    changed = run_train(*[a if a != "0.02" else "0.03" for a in args])
    assert changed.returncode == 2 and "--lr=0.03 differs from 0.02" in _error_lines(changed.stderr)[0]


@pytest.mark.slow
def test_tfrecords_flag_trains_and_evaluates_from_shards(ade_dir, tmp_path, run_train):
    # The one real process of psp-write-tfrecords and of psp-check-data: `python -m` each, in one
    # interpreter (support/cli.py: one TensorFlow import for the three runs).
    shards = tmp_path / "shards"
    tool = ["-m", "psp_tf.cli.write_tfrecords", "--dataset", "ade20k", "--data_dir", ade_dir, "--quiet"]
    runs = run_in_turn([tool + ["--split", split, "--output", shards / split] for split in ("training", "validation")]
                       + [["-m", "psp_tf.cli.check_data", "--dataset", "tfrecord", "--data_dir", shards,
                           "--split", "training"]])
    assert runs.codes == [0, 0, 0], "\n".join(runs.stderr)[-3000:]
    assert "training: 3 images scanned of 3" in runs.stdout and "problems: 0" in runs.stdout, runs.stdout[-2000:]
    shards = str(shards)
    done = run_train("--dataset", "ade20k", "--tfrecords", shards, "--split", "training", "--eval_split",
                     "validation", "--workdir", str(tmp_path / "run"), "--steps", "2", "--batch_size", "2",
                     "--crop_size", "41", "--eval_max_images", "1")  # one image read from the shards is enough
    assert done.returncode == 0, done.stderr[-3000:]
    assert "after 2 steps" in done.stdout.splitlines()[-1]
    wrong = run_train("--dataset", "cityscapes", "--preset", "tiny", "--tfrecords", shards, "--split", "training",
                      "--workdir", str(tmp_path / "run2"), "--crop_size", "41")
    assert wrong.returncode == 2 and "holds ade20k data but --dataset is cityscapes" in wrong.stderr


def _folder_dataset(root, splits=("train", "val"), unlabelled=(), bad_value=None):
    """images/<split>/ + labels/<split>/ with three classes; `bad_value` is written into train's labels."""
    for split in splits + unlabelled:
        os.makedirs(root / "images" / split)
        if split in splits:
            os.makedirs(root / "labels" / split)
        for i in range(2):
            label = np.full((96, 96), 255, np.uint8)
            label[:48] = 0
            label[48:, :48] = 1
            label[48:, 48:] = 2 if bad_value is None or split != "train" else bad_value
            cv2.imwrite(str(root / "images" / split / f"im{i}.png"), np.dstack([label * 60] * 3))
            if split in splits:
                cv2.imwrite(str(root / "labels" / split / f"im{i}.png"), label)
    return root


@pytest.mark.slow
def test_dataset_option_opens_a_custom_folder(tmp_path, run_train):
    root = _folder_dataset(tmp_path / "mydata")
    workdir = str(tmp_path / "run")
    # --eval_max_images 1: the options reach the evaluation's reader too, whatever the count it scores.
    base = ["--dataset", "folder", "--data_dir", str(root), "--eval_split", "val", "--workdir", workdir,
            "--steps", "1", "--batch_size", "2", "--crop_size", "41", "--eval_max_images", "1"]
    missing = run_train(*base)
    assert missing.returncode == 2 and "num_classes" in _error_lines(missing.stderr)[0]
    done = run_train(*base, "--dataset_option", "num_classes=3", "--dataset_option", "class_names=sky,grass,road")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.load(open(os.path.join(workdir, "train_config.json")))["dataset_options"] == [
        "num_classes=3", "class_names=sky,grass,road"]
    assert json.load(open(os.path.join(workdir, "model", "config.json")))["class_names"] == ["sky", "grass", "road"]


@pytest.mark.slow
def test_bad_label_met_in_the_pipeline_is_one_line_naming_the_file(tmp_path, run_train):
    root = _folder_dataset(tmp_path / "bad", bad_value=7)
    done = run_train("--dataset", "folder", "--data_dir", str(root), "--dataset_option", "num_classes=3",
                     "--eval_split", "val", "--workdir", str(tmp_path / "run"), "--steps", "2",
                     "--batch_size", "2", "--crop_size", "41")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and "label values outside" in lines[0] and "/labels/train/im" in lines[0]
    assert "after the dataset's mapping" in lines[0], lines  # TensorFlow's escaping of the quote undone
    assert "Traceback" not in done.stderr


def test_an_image_that_does_not_decode_is_one_line_naming_the_file(tmp_path, run_train):
    # TensorFlow's decoder fails inside the tf.data graph with a message that names no file (a file
    # that is no image fails the same way, in the same decoder).
    root = _folder_dataset(tmp_path / "bad")
    image = root / "images" / "train" / "im1.png"
    data = image.read_bytes()
    image.write_bytes(data[:len(data) // 2])
    done = run_train("--dataset", "folder", "--data_dir", str(root), "--dataset_option", "num_classes=3",
                     "--eval_split", "none", "--workdir", str(tmp_path / "run"), "--steps", "2",
                     "--batch_size", "2", "--crop_size", "41")
    assert done.returncode == 2, done.stderr[-2000:]
    assert _error_lines(done.stderr) == [line for line in done.stderr.splitlines() if line.strip()]
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {image}: cannot decode image"), lines


def test_a_checkpoint_the_disk_refuses_is_one_line(tmp_path, run_train, monkeypatch):
    import tensorflow as tf

    from psp_tf.training import trainer

    def full(config):  # what a checkpoint's SaveV2 raises on a full disk
        raise tf.errors.ResourceExhaustedError(None, None, f"{tmp_path}/run/checkpoints/ckpt-1_temp/part-00000; "
                                                           "No space left on device")

    monkeypatch.setattr(trainer, "train", full)
    done = run_train("--workdir", str(tmp_path / "run"), "--steps", "1", "--batch_size", "1", "--eval_split", "none")
    assert done.returncode == 2, done.stderr[-2000:]
    assert _error_lines(done.stderr) == [f"error: cannot write in --workdir {tmp_path}/run: No space left on device"]


def test_eval_split_without_ground_truth_is_refused_before_training(tmp_path, run_train):
    root = _folder_dataset(tmp_path / "data", unlabelled=("test",))
    workdir = tmp_path / "run"
    done = run_train("--dataset", "folder", "--data_dir", str(root), "--dataset_option", "num_classes=3",
                     "--eval_split", "test", "--workdir", str(workdir), "--steps", "2", "--batch_size", "2",
                     "--crop_size", "41")
    assert done.returncode == 2
    assert _error_lines(done.stderr) == ["error: --eval_split test of folder has no ground truth to score; "
                                         "choose a labelled split (e.g. val)"]
    assert not workdir.exists()


@pytest.mark.slow
def test_a_folder_without_validation_split_trains_into_a_workdir_named_after_the_run(tmp_path, monkeypatch,
                                                                                     run_train):
    root = _folder_dataset(tmp_path / "mydata", splits=("train",))
    monkeypatch.chdir(tmp_path)
    done = run_train("--dataset", "folder", "--data_dir", str(root), "--dataset_option", "num_classes=3",
                     "--steps", "1", "--batch_size", "2", "--crop_size", "41")
    assert done.returncode == 0, done.stderr[-3000:]
    workdir = tmp_path / "runs" / "tiny_folder"
    saved = json.load(open(workdir / "train_config.json"))
    assert saved["eval_split"] == "none" and saved["workdir"] == str(workdir)
    assert done.stdout.splitlines()[-1] == f"trained 1 steps (workdir {workdir}; model in {workdir}/model)"
    assert "evaluat" not in done.stdout and (workdir / "model" / "config.json").exists()


@pytest.mark.slow
def test_eval_split_none_trains_without_evaluating(tmp_path, run_train):
    workdir = tmp_path / "run"
    done = run_train("--eval_split", "none", "--workdir", str(workdir), "--steps", "1", "--batch_size", "1",
                     "--crop_size", "41")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluat" not in done.stdout and "mIoU" not in done.stdout
    assert json.load(open(workdir / "model" / "config.json"))["evaluation"] is None
