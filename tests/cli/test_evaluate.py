"""evaluate.py end to end on the tiny preset and the synthetic dataset, and every bad input: one line,
exit 2, nothing half-written (predict's and export's tests: tests/cli/test_predict.py, tests/test_export.py).

evaluate runs in-process through `run.evaluate(EvalConfig(...))` and the driver's `main([...])`; one
real subprocess (evaluate.py under --strategy multiworker) is the smoke test of the command."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from support import REPO
from support.protocol_cases import smooth_image, tiny_model
from psp_tf.cli import evaluate as evaluate_cli
from psp_tf.errors import UserError
from psp_tf.evaluation import run as eval_run
from support.weights import eval_config, write_weights_dir



@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model()
    weights = write_weights_dir(model, str(root / "weights"))
    import psp_tf
    weights150 = write_weights_dir(psp_tf.build_pspnet("tiny", num_classes=150), str(root / "weights150"))
    images = root / "images"
    images.mkdir()
    for i, shape in enumerate([(150, 170, 3), (90, 200, 3)]):
        cv2.imwrite(str(images / f"img{i}.png"), smooth_image(shape, i)[..., ::-1])
    return {"root": root, "weights": weights, "weights150": weights150, "images": str(images), "model": model}


def run(*args, **extra_env):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", **extra_env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=600)


def _one_worker_tf_config():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}})


@pytest.mark.slow
def test_evaluate_writes_results_and_author_numbered_pngs(workspace):
    out = workspace["root"] / "eval"
    r = run("evaluate.py", "--weights", workspace["weights"], "--dataset", "synthetic", "--split", "val",
            "--max_images", "3", "--output_dir", str(out), "--scales", "0.5,1.0", "--batch_size", "4",
            "--strategy", "multiworker", TF_CONFIG=_one_worker_tf_config())
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.load(open(out / "results.json"))
    assert results["num_images"] == 3 and results["settings"]["scales"] == [0.5, 1.0]
    assert len(results["per_class_iou"]) == 4 and len(results["weights_sha256"]) == 64
    conf = np.array(results["confusion_matrix"])
    inter, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
    assert results["mean_iou"] == pytest.approx(100 * np.mean(inter / np.maximum(union, 1e-300)))
    # mmseg's figure beside the author's: the mean over the classes in ground truth or prediction.
    assert results["mean_iou_present"] == pytest.approx(100 * np.mean(inter[union > 0] / union[union > 0]))
    assert results["present_classes"] == int(np.sum(union > 0)) and "mmseg's nan-mean" in r.stdout
    assert "mIoU" in r.stdout and "dotted triangle" in r.stdout and "ETA" in r.stderr
    names = sorted(os.listdir(out / "predictions"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    assert sorted(os.listdir(out / "color")) == names
    # The saved labels are the protocol's prediction for that image (synthetic: train ids as is).
    from psp_tf.data.registry import open_dataset
    from psp_tf.evaluation.protocol import predict
    image, _ = open_dataset("synthetic", None, "val", num_images=3).read(1)
    want = predict(workspace["model"], image, scales=(0.5, 1.0)).labels
    np.testing.assert_array_equal(cv2.imread(str(out / "predictions" / "00001.png"), cv2.IMREAD_UNCHANGED), want)


def _main(capsys, *args):
    """evaluate's driver in-process: (exit status, stderr lines)."""
    capsys.readouterr()
    status = evaluate_cli.main(["evaluate.py", *args])
    return status, capsys.readouterr().err.strip().splitlines()


def test_evaluate_bad_scales_exit_2_and_nothing_written(workspace, capsys):
    out = workspace["root"] / "bad_eval"
    status, err = _main(capsys, "--weights", workspace["weights"], "--dataset", "synthetic", "--scales", "0",
                        "--output_dir", str(out))
    assert status == 2 and len(err) == 1 and err[0].startswith("error: --scales") and "> 0" in err[0]
    assert not out.exists()


def test_evaluate_help_exits_0_and_lists_choices(capsys):
    status = evaluate_cli.main(["evaluate.py", "--help"])
    out = capsys.readouterr().out
    assert status == 0 and out.startswith(evaluate_cli.__doc__.strip().splitlines()[0])
    assert "--strategy=<default|mirrored|multiworker|tpu>" in out and "--show_max" in out


def _ade_layout(root, image_bytes):
    for sub in ("images/validation", "annotations/validation"):
        os.makedirs(os.path.join(root, sub))
    with open(os.path.join(root, "images/validation/ADE_val_00000001.jpg"), "wb") as f:
        f.write(image_bytes)
    cv2.imwrite(os.path.join(root, "annotations/validation/ADE_val_00000001.png"), np.ones((8, 8), np.uint8))
    return root


@pytest.mark.parametrize("case", ["negative_scale", "wrong_weights_dir", "class_mismatch",
                                  "undecodable_image", "noncompliant_expect"])
def test_evaluate_bad_input_in_process(workspace, case):
    root = workspace["root"]
    out = root / f"out_{case}"
    ok_jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    if case == "negative_scale":
        values, message = dict(weights=workspace["weights"], scales="-0.5,1"), "--scales"
    elif case == "wrong_weights_dir":
        values, message = dict(weights=str(root / "nothing")), "nothing"
    elif case == "class_mismatch":
        data = _ade_layout(str(root / "ade_ok"), ok_jpeg)
        values, message = dict(weights=workspace["weights"], dataset="ade20k", data_dir=data,
                               split="validation"), "150 classes"
    elif case == "undecodable_image":
        data = _ade_layout(str(root / "ade_broken"), b"\xff\xd8 truncated")
        values, message = dict(weights=workspace["weights150"], dataset="ade20k", data_dir=data,
                               split="validation"), "ADE_val_00000001.jpg"
    else:
        values, message = dict(weights=workspace["weights"], expect="paper"), "paper"
    with pytest.raises(UserError, match=message) as error:  # the config's checks or the run's
        eval_run.evaluate(eval_config(output_dir=str(out), **values), log=lambda *a: None)
    assert "\n" not in str(error.value)
    assert not out.exists() and not [p for p in os.listdir(root) if p.startswith(f".out_{case}")]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "synthetic"], "--weights is required"),
    (["--weights", "w", "--batch_size", "abc"], "--batch_size"),
    (["--weights", "w", "--show_max", "3"], "--show_max needs --show_dir"),
    (["--weights", "w", "--show_dir", "s", "--show_max", "0"], "--show_max"),
    (["--weights", "w", "extra"], "unexpected argument 'extra'"),
])
def test_evaluate_flag_errors_are_one_line_exit_2(args, message, capsys):
    status, err = _main(capsys, *args)
    assert status == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], err


@pytest.mark.slow
def test_evaluate_dataset_option_reaches_the_reader(workspace, capsys):
    out = workspace["root"] / "eval_option"
    status, err = _main(capsys, "--weights", workspace["weights"], "--dataset", "synthetic", "--split", "val",
                        "--output_dir", str(out), "--dataset_option", "num_images=2")
    assert status == 0 and json.load(open(out / "results.json"))["num_images"] == 2
    assert "ETA" in "\n".join(err)  # the progress line
    with pytest.raises(Exception, match="--dataset_option 'num_images' must be key=value"):
        eval_run.evaluate(eval_config(weights=workspace["weights"], dataset_options=("num_images",)),
                          log=lambda *a: None)


def test_expect_paper_on_a_split_without_ground_truth_is_refused(workspace, tmp_path):
    os.makedirs(tmp_path / "images" / "test")
    cv2.imwrite(str(tmp_path / "images" / "test" / "a.png"), np.zeros((20, 20, 3), np.uint8))
    config = eval_config(weights=workspace["weights"], dataset="folder", data_dir=str(tmp_path), split="test",
                         expect="paper", dataset_options=("num_classes=4",))
    with pytest.raises(UserError, match="--expect paper: folder test has no ground truth to score"):
        eval_run.evaluate(config, log=lambda *a: None)


def test_output_dir_with_several_workers_is_refused(workspace, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    out = workspace["root"] / "two_workers"
    with pytest.raises(UserError, match="--output_dir with several workers"):
        eval_run.evaluate(eval_config(weights=workspace["weights"], output_dir=str(out)), log=lambda *a: None)
    assert not out.exists()
