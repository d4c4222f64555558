"""psp-predict: in-process through predict_files(PredictConfig) and the driver's main (error lines);
inputs listed safely, outputs apart from inputs, streaming and resume, flags checked; one subprocess."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest

import psp_tf
from psp_tf.cli import predict as predict_driver
from psp_tf.errors import UserError
from psp_tf.inference import files as predict_files
from psp_tf.inference.config import PredictConfig
from psp_tf.model_dir import weights_digest
from support.weights import write_weights_dir
from support.protocol_cases import smooth_image, tiny_model
from support.cli import run_in_turn

pytestmark = pytest.mark.heavy(30)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights_dir(tiny_model(), str(tmp_path_factory.mktemp("predict") / "weights"))


def _photos(directory, names, shape=(40, 52, 3)):
    os.makedirs(directory, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(os.path.join(directory, name), smooth_image(shape, i)[..., ::-1])
    return {name: open(os.path.join(directory, name), "rb").read() for name in names}


def _run(capsys, *argv):
    code = predict_driver.main(["psp-predict", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _assert_one_error(code, err, *expect):
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for text in expect:
        assert text in err, err


def _listing(directory):
    return sorted(os.listdir(directory))


def test_output_that_is_contains_or_lies_inside_the_input_is_refused(tmp_path, capsys, weights):
    photos = tmp_path / "D"
    kept = _photos(photos, ["a.jpg", "b.png"])
    os.symlink(photos, tmp_path / "alias")
    for output, relation in [(photos, "is"), (tmp_path, "contains"), (photos / "out", "lies inside"),
                             (tmp_path / "alias", "is")]:
        code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(output),
                            "--overwrite")
        _assert_one_error(code, err, f"--output {output} {relation} --input {photos}")
        assert {n: open(photos / n, "rb").read() for n in kept} == kept and _listing(photos) == ["a.jpg", "b.png"]
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos / "a.jpg"), "--output", str(photos),
                        "--overwrite")
    _assert_one_error(code, err, "contains --input")
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", weights, "--overwrite")
    _assert_one_error(code, err, "--output", "is --weights")
    assert _listing(photos) == ["a.jpg", "b.png"]


@pytest.mark.timeout(120)  # the old listing opened a FIFO and waited forever for a writer
@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink_loop", "dangling_symlink"])
def test_non_regular_entries_named_like_images_are_one_error_line(tmp_path, capsys, weights, kind):
    photos = tmp_path / "in"
    _photos(photos, ["a.jpg"])
    bad = photos / "x.jpg"
    if kind == "directory":
        bad.mkdir()
    elif kind == "fifo":
        os.mkfifo(bad)
    elif kind == "symlink_loop":
        os.symlink(photos / "y.jpg", bad)
        os.symlink(bad, photos / "y.jpg")
    else:
        os.symlink(photos / "gone.jpg", bad)
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"))
    _assert_one_error(code, err, str(bad))
    assert not (tmp_path / "out").exists()
    if kind == "fifo":  # also as the single --input
        code, _, err = _run(capsys, "--weights", weights, "--input", str(bad), "--output", str(tmp_path / "o"))
        _assert_one_error(code, err, f"--input {bad} is a FIFO")


@pytest.mark.slow
def test_output_names_never_collide(tmp_path, capsys, weights):
    photos = tmp_path / "in"
    _photos(photos, ["a.jpg", "a_labels.jpg"])
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"))
    _assert_one_error(code, err, "a.jpg and", "a_labels.jpg would both write a_labels.png")
    assert not (tmp_path / "out").exists()
    os.rename(photos / "a_labels.jpg", photos / "a_overlay.jpg")  # collides only when overlays are written
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"),
                        "--overlay")
    _assert_one_error(code, err, "would both write a_overlay.png")
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"))
    assert code == 0, err
    assert _listing(tmp_path / "out") == ["a.png", "a_labels.png", "a_overlay.png", "a_overlay_labels.png",
                                          "predict.json"]


@pytest.mark.slow
def test_images_stream_one_at_a_time_and_a_rerun_skips_what_is_done(tmp_path, capsys, weights, monkeypatch):
    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg", "b.jpg", "c.jpg"])
    # A file that is no image is found by a cheap look at every input before the first output.
    (photos / "d.jpg").write_bytes(b"GIF89a not one of ours")
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out))
    _assert_one_error(code, err, "d.jpg: cannot decode image")
    assert not out.exists()
    os.remove(photos / "d.jpg")
    events = []
    read, predict = predict_files.read_image, predict_files.predict

    def reading(path):
        events.append(f"read {os.path.basename(path)}")
        return read(path)

    def predicting(model, image, **kw):
        events.append("predict")
        if len(events) == 4 and crash[0]:
            raise KeyboardInterrupt  # the run stops in the middle of b.jpg
        return predict(model, image, **kw)

    crash = [True]
    monkeypatch.setattr(predict_files, "read_image", reading)
    monkeypatch.setattr(predict_files, "predict", predicting)
    with pytest.raises(KeyboardInterrupt):
        predict_files.predict_files(PredictConfig(weights=weights, input=str(photos), output=str(out), overlay=True))
    # Decoded one at a time; what was finished stays, nothing half-written.
    assert events == ["read a.jpg", "predict", "read b.jpg", "predict"]
    assert _listing(out) == ["a.png", "a_labels.png", "a_overlay.png", "predict.json"]
    done = {n: os.stat(out / n).st_mtime_ns for n in _listing(out)}
    capsys.readouterr()
    crash[0], events[:] = False, []
    code, stdout, _ = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out), "--overlay")
    assert code == 0 and "1 of 3 image(s) already done" in stdout and "2 image(s) written" in stdout
    assert events == ["read b.jpg", "predict", "read c.jpg", "predict"]
    assert {n: os.stat(out / n).st_mtime_ns for n in done} == done  # a.jpg's outputs untouched
    assert len(_listing(out)) == 10  # 3 images x 3 outputs, and predict.json
    os.remove(out / "c_overlay.png")  # an image with an output missing is redone, with --overwrite all are
    events[:] = []
    code, stdout, _ = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out), "--overlay")
    assert code == 0 and events == ["read c.jpg", "predict"]
    events[:] = []
    code, stdout, _ = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out), "--overwrite")
    assert code == 0 and len(events) == 6 and len(_listing(out)) == 10
    umask = os.umask(0)
    os.umask(umask)
    assert {os.stat(out / n).st_mode & 0o777 for n in _listing(out)} == {0o666 & ~umask}


@pytest.mark.slow
def test_the_tool_as_a_subprocess_writes_psp_tf_predict_labels(tmp_path, weights, capsys):
    """The one subprocess: what psp-predict writes is psp_tf.predict's result, quietly; a rerun skips it.

    The same interpreter first runs it on a broken image (support/cli.py: `python -m psp_tf.cli.predict`
    twice, each run's stderr on its own): the tool silences OpenCV when it starts
    (psp_tf.startup.import_tensorflow_quietly), so its stderr is the one error line, and nothing is written.
    """
    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["p.png"], shape=(61, 47, 3))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    tool = ["-m", "psp_tf.cli.predict", "--weights", weights]
    runs = run_in_turn([tool + ["--input", tmp_path / "broken", "--output", tmp_path / "broken_out"],
                        tool + ["--input", photos, "--output", out]])
    broken, good = runs.stderr
    assert runs.codes[0] == 2 and broken.count("\n") == 1 and broken.startswith("error: "), broken
    assert "broken.png" in broken and not (tmp_path / "broken_out").exists()
    assert runs.codes[1] == 0 and good == "", good
    code, stdout, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out))
    assert code == 0 and "1 of 1 image(s) already done" in stdout, err
    from psp_tf.model_dir import load_model
    image = cv2.imread(str(photos / "p.png"))[..., ::-1]
    want = psp_tf.predict(load_model(weights), image).labels
    np.testing.assert_array_equal(cv2.imread(str(out / "p_labels.png"), cv2.IMREAD_UNCHANGED), want)


@pytest.mark.slow
def test_masks_and_overlays_of_a_directory(tmp_path, weights):
    photos, out = tmp_path / "images", tmp_path / "pred"
    _photos(photos, ["img0.png", "img1.png"], shape=(90, 200, 3))
    assert predict_files.predict_files(PredictConfig(weights=weights, input=str(photos), output=str(out),
                                                     overlay=True)) == 0
    assert sorted(os.listdir(out)) == ["img0.png", "img0_labels.png", "img0_overlay.png",
                                       "img1.png", "img1_labels.png", "img1_overlay.png", "predict.json"]
    from psp_tf.model_dir import load_model
    image = cv2.imread(str(photos / "img1.png"))[..., ::-1]
    want = psp_tf.predict(load_model(weights), image).labels
    np.testing.assert_array_equal(cv2.imread(str(out / "img1_labels.png"), cv2.IMREAD_UNCHANGED), want)
    colour = cv2.imread(str(out / "img1.png"))
    overlay = cv2.imread(str(out / "img1_overlay.png"))
    assert colour.shape == (90, 200, 3)
    assert overlay.shape[0] == 90 and overlay.shape[1] > 200  # image + legend panel


def test_an_undecodable_image_is_one_error_line_and_nothing_written(tmp_path, capsys, weights):
    bad = tmp_path / "bad_images"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "pred_bad"
    code, _, err = _run(capsys, "--weights", weights, "--input", str(bad), "--output", str(out))
    _assert_one_error(code, err, "broken.jpg")
    assert not out.exists()


def test_inputs_whose_outputs_would_collide_are_refused(tmp_path):
    for name in ("a.jpg", "a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="a.jpg and .*a.png would both write a.png"):
        predict_files.plan_outputs(predict_files.list_inputs(str(tmp_path)), str(tmp_path / "out"))
    os.remove(tmp_path / "a.png")
    assert [os.path.basename(f) for f in predict_files.list_inputs(str(tmp_path))] == ["a.jpg", "b.png"]


NOWHERE = "/nonexistent/psp_tf_test"
BAD_NUMBERS = [(["--batch_size", "0"], "--batch_size"), (["--batch_size", "-2"], "--batch_size"),
               (["--scales", "0"], "--scales"), (["--scales", "1,-0.5"], "--scales"), (["--scales", "nan"], "--scales"),
               (["--scales", "inf"], "--scales"), (["--scales", "big"], "--scales")]


@pytest.mark.parametrize("args,flag", BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_bad_numbers_are_refused_before_any_work(args, flag, tmp_path, monkeypatch, capsys):
    # The weights and input name nothing that exists: the number must be what is refused.
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "--weights", NOWHERE, "--input", NOWHERE + ".png", "--output", "out", *args)
    _assert_one_error(code, err, flag)
    assert os.listdir(tmp_path) == []


def test_output_onto_a_dangling_symlink_and_missing_flags_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.symlink(str(tmp_path / "missing" / "target"), "link")
    code, _, err = _run(capsys, "--weights", NOWHERE, "--input", NOWHERE + ".png", "--output", "link")
    _assert_one_error(code, err, "link is a dangling symlink")
    code, _, err = _run(capsys, "--weights", NOWHERE, "--output", "out")
    _assert_one_error(code, err, "--input is required")
    code, _, err = _run(capsys, "--weights", NOWHERE, "--input", "x.png", "--output", "out", "--precision", "fp8")
    _assert_one_error(code, err, "--precision")
    assert os.listdir(tmp_path) == ["link"]


def test_help_lists_the_flags_and_exits_0(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and out.startswith("psp-predict: segment images")
    assert "--precision=<float32|bfloat16>" in out and "--overlay" in out


@pytest.mark.slow
def test_a_symlink_planted_in_the_output_is_replaced_never_written_through(tmp_path, capsys, weights):
    photos = tmp_path / "in"
    kept = _photos(photos, ["a.png"])
    out = tmp_path / "out"
    os.makedirs(out)
    os.symlink(photos / "a.png", out / "a_labels.png")  # points back at the input photo
    code, stdout, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out))
    assert code == 0, err
    assert open(photos / "a.png", "rb").read() == kept["a.png"]  # the input is untouched
    assert not os.path.islink(out / "a_labels.png") and cv2.imread(str(out / "a_labels.png")) is not None
    assert "np.int" not in stdout  # classes are printed as plain numbers


def test_psp_tf_predict_is_only_the_function():
    from psp_tf.evaluation import protocol
    assert psp_tf.predict is protocol.predict  # no module of that name rewrites its own class
    package = os.path.dirname(psp_tf.__file__)
    assert not os.path.exists(os.path.join(package, "predict.py")) and not os.path.isdir(os.path.join(package, "predict"))


def _mtimes(directory):
    return {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in _listing(directory)}


def test_a_rerun_with_other_weights_or_settings_refuses_to_mix_outputs(tmp_path, capsys, weights):

    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg", "b.jpg"])
    other = str(tmp_path / "other_weights")  # the same network, another directory's bytes
    shutil.copytree(weights, other)
    with open(os.path.join(other, "config.json"), "a") as f:
        f.write("\n")
    base = ["--input", str(photos), "--output", str(out)]
    code, _, err = _run(capsys, "--weights", weights, *base, "--scales", "1.0,0.75")
    assert code == 0, err
    recorded = json.load(open(out / "predict.json"))
    assert recorded["scales"] == [1.0, 0.75] and recorded["flip"] is True and recorded["precision"] == "float32"
    assert len(recorded["weights_sha256"]) == 64
    before = _mtimes(out)
    # --batch_size never changes a result: the same settings, nothing to redo, predict.json kept.
    code, stdout, _ = _run(capsys, "--weights", weights, *base, "--scales", "1.0,0.75", "--batch_size", "3")
    assert code == 0 and "2 of 2 image(s) already done" in stdout and _mtimes(out) == before
    for argv, what in [(["--weights", other, "--scales", "1.0,0.75"], "another weights ("),
                       (["--weights", other, "--scales", "1.0,0.75", "--overlay"], "another weights ("),
                       (["--weights", weights, "--noflip"], "another scales and flip ("),
                       (["--weights", weights, "--scales", "1.0,0.75", "--precision", "bfloat16"],
                        "another precision (")]:
        code, _, err = _run(capsys, *argv, *base)
        _assert_one_error(code, err, f"--output {out} holds outputs made with {what}predict.json)",
                          "pass --overwrite")
        assert _mtimes(out) == before  # nothing touched
    # --overwrite with other weights removes the old run's outputs before the new record: a run
    # stopped after its first image leaves no old outputs for a rerun to skip as its own.
    real_predict, calls = predict_files.predict, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predict_files, "predict", stop_at_the_second)
        with pytest.raises(KeyboardInterrupt):
            predict_files.predict_files(PredictConfig(weights=other, input=str(photos), output=str(out),
                                                      overwrite=True))
    assert _listing(out) == ["a.png", "a_labels.png", "predict.json"]
    assert json.load(open(out / "predict.json"))["weights_sha256"] != recorded["weights_sha256"]
    code, stdout, err = _run(capsys, "--weights", other, *base)
    assert code == 0 and "1 of 2 image(s) already done" in stdout, err
    assert len(_listing(out)) == 5


def test_the_record_names_the_model_files_only_and_an_older_record_still_matches(tmp_path, capsys, weights):
    # What load_model reads decides the digest: the checkpoint beside it, or a note kept in the
    # directory, neither changes the outputs nor makes a rerun refuse them.
    mine = str(tmp_path / "weights")
    shutil.copytree(weights, mine)
    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg"])
    base = ["--weights", mine, "--input", str(photos), "--output", str(out)]
    code, _, err = _run(capsys, *base)
    assert code == 0, err
    recorded = json.load(open(out / "predict.json"))
    assert recorded["weights_sha256"] == weights_digest(mine, names=("config.json", "model.weights.h5"))
    with open(os.path.join(mine, "notes.txt"), "w") as f:
        f.write("converted on my laptop\n")
    checkpoint = [n for n in os.listdir(mine) if n.startswith("ckpt") and n.endswith(".index")][0]
    with open(os.path.join(mine, checkpoint), "ab") as f:
        f.write(b"\0")
    before = _mtimes(out)
    code, stdout, err = _run(capsys, *base)
    assert code == 0 and "1 of 1 image(s) already done" in stdout and _mtimes(out) == before, err
    # A record written before (a digest of every file in the directory) is the same weights: the run
    # goes on, and the record is rewritten with the model files' digest.
    legacy = {**recorded, "weights_sha256": weights_digest(mine, names=None)}
    with open(out / "predict.json", "w") as f:
        json.dump(legacy, f)
    _photos(photos, ["b.jpg"])
    code, stdout, err = _run(capsys, *base)
    assert code == 0 and "1 of 2 image(s) already done" in stdout, err
    assert json.load(open(out / "predict.json")) == {**recorded, "images": ["a", "b"]}
    # Other bytes in a file load_model reads are other weights.
    with open(os.path.join(mine, "config.json"), "a") as f:
        f.write("\n")
    code, _, err = _run(capsys, *base)
    _assert_one_error(code, err, "holds outputs made with another weights (")


@pytest.mark.parametrize("manifest", [None, "{not json", "[1, 2]", "fifo"],
                         ids=["missing", "broken", "not_an_object", "fifo"])
def test_outputs_without_a_readable_record_are_not_taken_as_this_runs(tmp_path, capsys, weights, manifest):
    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg"])
    base = ["--weights", weights, "--input", str(photos), "--output", str(out)]
    assert _run(capsys, *base)[0] == 0
    if manifest is None:
        os.remove(out / "predict.json")  # e.g. outputs of psp_tf before the record existed
        expect = "holds outputs of 1 image(s) but no predict.json saying which weights and settings"
    else:
        if manifest == "fifo":  # never opened, so never a hang
            os.remove(out / "predict.json")
            os.mkfifo(out / "predict.json")
        else:
            (out / "predict.json").write_text(manifest)
        expect = "predict.json is unreadable ("
    before = _mtimes(out)
    code, _, err = _run(capsys, *base)
    _assert_one_error(code, err, f"--output {out}", expect, "--overwrite")
    assert _mtimes(out) == before
    code, stdout, err = _run(capsys, *base, "--overwrite")
    assert code == 0 and "1 image(s) written" in stdout, err
    assert sorted(__import__("json").load(open(out / "predict.json"))) == ["flip", "images", "precision", "scales",
                                                                          "weights_sha256"]


def test_an_overwrite_whose_first_image_fails_leaves_the_old_outputs(tmp_path, capsys, weights):
    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["b.jpg"])
    assert _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out))[0] == 0
    before = _mtimes(out)
    # It starts like a JPEG, so it passes the up-front check and fails only when decoded.
    (photos / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out),
                        "--noflip", "--overwrite")
    _assert_one_error(code, err, "a.jpg")
    assert _mtimes(out) == before  # the other run's outputs and record, as they were


def test_outputs_of_other_images_made_with_other_weights_are_not_mixed_in(tmp_path, capsys, weights):

    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    _photos(first, ["a.jpg"])
    _photos(second, ["b.jpg"])
    other = str(tmp_path / "other_weights")
    shutil.copytree(weights, other)
    with open(os.path.join(other, "config.json"), "a") as f:
        f.write("\n")
    assert _run(capsys, "--weights", weights, "--input", str(first), "--output", str(out))[0] == 0
    before = _mtimes(out)
    # None of b's outputs are there yet, but a's are, and predict.json speaks for both.
    code, _, err = _run(capsys, "--weights", other, "--input", str(second), "--output", str(out))
    _assert_one_error(code, err, f"--output {out} holds outputs made with another weights (predict.json)")
    assert _mtimes(out) == before
    code, _, err = _run(capsys, "--weights", other, "--input", str(second), "--output", str(out), "--overwrite")
    assert code == 0, err
    assert _listing(out) == ["b.png", "b_labels.png", "predict.json"]  # a's, of the other weights, went
    # A rerun with the same settings adds its images to the record; outputs not in it are never counted.
    _photos(first, ["c.jpg"])
    assert _run(capsys, "--weights", other, "--input", str(first), "--output", str(out))[0] == 0
    assert json.load(open(out / "predict.json"))["images"] == ["a", "b", "c"]


def test_files_that_only_look_like_outputs_are_never_counted_or_removed(tmp_path, capsys, weights):

    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg"])
    _photos(out, ["x.png", "x_labels.png"])  # the user's own files, named like a mask and its labels
    other = str(tmp_path / "other_weights")
    shutil.copytree(weights, other)
    with open(os.path.join(other, "config.json"), "a") as f:
        f.write("\n")
    assert _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out))[0] == 0
    assert json.load(open(out / "predict.json"))["images"] == ["a"]
    code, _, err = _run(capsys, "--weights", other, "--input", str(photos), "--output", str(out), "--overwrite")
    assert code == 0, err
    assert _listing(out) == ["a.png", "a_labels.png", "predict.json", "x.png", "x_labels.png"]


def test_an_input_linked_into_the_output_is_refused(tmp_path, capsys, weights):
    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg"])
    _photos(out, ["photo.png"])
    os.symlink(out / "photo.png", photos / "photo.png")  # its mask would be written over it
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(out))
    _assert_one_error(code, err, f"--output {out} contains --input {photos}/photo.png")
    assert _listing(out) == ["photo.png"]


def test_a_file_name_that_is_not_utf8_is_one_error_line(tmp_path, capsys, weights):
    photos = tmp_path / "in"
    _photos(photos, ["a.jpg"])
    os.rename(photos / "a.jpg", os.path.join(os.fsencode(photos), b"bad\xff.jpg"))
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"))
    _assert_one_error(code, err, "bad\\udcff.jpg", "is not valid UTF-8")
    assert not (tmp_path / "out").exists()


def test_paths_with_dotdot_after_a_symlink_are_read_and_written_where_the_os_says(tmp_path, capsys, weights,
                                                                                   monkeypatch):
    # TensorFlow collapses 'L/..' as text; the OS goes up from L's target. The driver passes on the OS's.
    (tmp_path / "data" / "deep").mkdir(parents=True)
    _photos(tmp_path / "data" / "imgs", ["a.jpg"])
    os.symlink(tmp_path / "data" / "deep", tmp_path / "L")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = _run(capsys, "--weights", weights, "--input", "L/../imgs", "--output", "L/../masks")
    assert code == 0 and "1 image(s) written" in stdout, err
    assert _listing(tmp_path / "data" / "masks") == ["a.png", "a_labels.png", "predict.json"]


def test_a_scale_too_small_for_the_base_size_is_one_error_line(tmp_path, capsys, weights):
    photos = tmp_path / "in"
    _photos(photos, ["a.jpg"])
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"),
                        "--scales", "1e-300,1")
    _assert_one_error(code, err, "--scales=1e-300,1: 1e-300 would shrink images to a long side under 2 pixels",
                      "at least 1/")
    assert not (tmp_path / "out").exists()


def test_a_batch_too_large_for_the_memory_is_one_error_line(tmp_path, capsys, weights):
    # One image of two tiles: the last batch is padded to --batch_size, so all of it is allocated.
    photos = tmp_path / "in"
    _photos(photos, ["a.jpg"])
    code, _, err = _run(capsys, "--weights", weights, "--input", str(photos), "--output", str(tmp_path / "out"),
                        "--batch_size", "100000000")
    _assert_one_error(code, err, "--batch_size=100000000: a device step holds every tile of a batch", "use at most")
    assert not (tmp_path / "out").exists()


def test_a_second_run_into_an_output_in_use_is_refused(tmp_path, capsys, weights):
    import fcntl

    photos, out = tmp_path / "in", tmp_path / "out"
    _photos(photos, ["a.jpg"])
    base = ["--weights", weights, "--input", str(photos), "--output", str(out)]
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running psp-predict holds
        code, _, err = _run(capsys, *base)
        _assert_one_error(code, err, f"{out} is in use by another psp-predict run")
        assert _listing(out) == []
    finally:
        os.close(fd)
    assert _run(capsys, *base)[0] == 0
    # A run that writes nothing leaves no --output it made: here, weights whose file is damaged (found
    # when the model loads, with --output made and locked).
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_bytes(open(os.path.join(weights, "config.json"), "rb").read())
    (damaged / "model.weights.h5").write_bytes(b"not hdf5")
    code, _, err = _run(capsys, "--weights", str(damaged), "--input", str(photos), "--output", str(tmp_path / "new"))
    _assert_one_error(code, err, "model.weights.h5: cannot read Keras weights")
    assert not (tmp_path / "new").exists()
