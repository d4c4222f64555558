"""evaluate.py, python -m psp_tf.predict and python -m psp_tf.export end to end on the tiny preset and
the synthetic dataset, and every bad input: one line, exit 2, nothing half-written."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from test_eval_protocol import _image, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_weights_dir(model, path):
    """A weights directory in the converter's layout (config.json + model.weights.h5 + checkpoint)."""
    os.makedirs(path)
    model.save_weights(os.path.join(path, "model.weights.h5"))
    tf.train.Checkpoint(model=model).write(os.path.join(path, "ckpt"))
    config = model.psp_config
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"preset": config.name, "config": config.to_dict(), "num_classes": config.num_classes,
                   "class_names": list(config.class_names), "crop_size": list(config.crop_size),
                   "base_size": config.base_size, "mean": list(config.mean),
                   "input_channel_order": "RGB", "source_channel_order": config.source_channel_order}, f)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model()
    weights = write_weights_dir(model, str(root / "weights"))
    images = root / "images"
    images.mkdir()
    for i, shape in enumerate([(150, 170, 3), (90, 200, 3)]):
        cv2.imwrite(str(images / f"img{i}.png"), _image(shape, i)[..., ::-1])
    return {"root": root, "weights": weights, "images": str(images), "model": model}


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def test_evaluate_writes_results_and_author_numbered_pngs(workspace):
    out = workspace["root"] / "eval"
    r = run("evaluate.py", "--weights", workspace["weights"], "--dataset", "synthetic", "--split", "val",
            "--max_images", "3", "--output_dir", str(out), "--scales", "0.5,1.0", "--batch_size", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.load(open(out / "results.json"))
    assert results["num_images"] == 3 and results["settings"]["scales"] == [0.5, 1.0]
    assert len(results["per_class_iou"]) == 4 and len(results["weights_sha256"]) == 64
    conf = np.array(results["confusion_matrix"])
    inter, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
    assert results["mean_iou"] == pytest.approx(100 * np.mean(inter / np.maximum(union, 1e-300)))
    assert "mIoU" in r.stdout and "class_3" in r.stdout and "ETA" in r.stderr
    names = sorted(os.listdir(out / "predictions"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    assert sorted(os.listdir(out / "color")) == names
    # The saved labels are the protocol's prediction for that image (synthetic: train ids as is).
    from psp_tf.data.registry import open_dataset
    from psp_tf.evaluation.protocol import predict
    image, _ = open_dataset("synthetic", None, "val", num_images=3).read(1)
    want = predict(workspace["model"], image, scales=(0.5, 1.0)).labels
    np.testing.assert_array_equal(cv2.imread(str(out / "predictions" / "00001.png"), cv2.IMREAD_UNCHANGED), want)


def test_expect_paper_without_a_published_figure_is_an_error(workspace):
    r = run("evaluate.py", "--weights", workspace["weights"], "--dataset", "synthetic", "--max_images", "1",
            "--expect", "paper")
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "paper" in r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--scales", "0"], "scale"),
    (["--scales", "-0.5,1"], "scale"),
    (["--dataset", "ade20k", "--data_dir", "{root}"], "ade20k"),
    (["--weights", "{root}/nothing"], "nothing"),
])
def test_evaluate_bad_input(workspace, flags, message):
    out = workspace["root"] / "bad_eval"
    args = ["--weights", workspace["weights"], "--dataset", "synthetic", "--max_images", "1",
            "--output_dir", str(out)]
    args += [f.format(root=workspace["root"]) for f in flags]
    r = run("evaluate.py", *args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and message in lines[-1]
    assert not out.exists()
    assert not [p for p in os.listdir(workspace["root"]) if p.startswith(".bad_eval")]


def test_predict_cli_masks_and_overlays(workspace):
    out = workspace["root"] / "pred"
    r = run("-m", "psp_tf.predict", "--weights", workspace["weights"], "--input", workspace["images"],
            "--output", str(out), "--overlay")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["img0.png", "img0_labels.png", "img0_overlay.png",
                                       "img1.png", "img1_labels.png", "img1_overlay.png"]
    image = cv2.imread(os.path.join(workspace["images"], "img1.png"))[..., ::-1]
    import psp_tf.predict
    want = psp_tf.predict(workspace["model"], image).labels
    np.testing.assert_array_equal(cv2.imread(str(out / "img1_labels.png"), cv2.IMREAD_UNCHANGED), want)
    overlay = cv2.imread(str(out / "img1_overlay.png"))
    assert overlay.shape[0] == 90 and overlay.shape[1] > 200  # image + legend panel


def test_predict_cli_undecodable_image(workspace):
    bad = workspace["root"] / "bad_images"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = workspace["root"] / "pred_bad"
    r = run("-m", "psp_tf.predict", "--weights", workspace["weights"], "--input", str(bad),
            "--output", str(out))
    assert r.returncode == 2 and "broken.jpg" in r.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_export_equals_predict(workspace):
    out = workspace["root"] / "saved"
    r = run("-m", "psp_tf.export", "--weights", workspace["weights"], "--output", str(out),
            "--scales", "0.75,1.0")
    assert r.returncode == 0, r.stderr[-2000:]
    served = tf.saved_model.load(str(out)).serve
    from psp_tf.evaluation.protocol import predict
    for shape in [(150, 170, 3), (300, 120, 3), (60, 50, 1)]:
        image = _image(shape, 7)
        got = served(tf.constant(image))
        want = predict(workspace["model"], image, scales=(0.75, 1.0))
        np.testing.assert_array_equal(got["labels"].numpy(), want.labels)
        np.testing.assert_allclose(got["probabilities"].numpy(), want.probabilities, atol=1e-6)
    meta = json.load(open(out / "psp_tf.json"))
    assert meta["preset"] == "tiny" and meta["protocol"]["scales"] == [0.75, 1.0]
