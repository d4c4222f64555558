"""Every tool's outputs: apart from its inputs, inside the output, a good old output kept until the new
one is complete (convert, export, write_tfrecords, check, evaluate, train)."""

import importlib
import json
import os

import numpy as np
import pytest

import psp_tf.data as D
from psp_tf.errors import UserError
from psp_tf.cli import check_data, write_tfrecords
from psp_tf.data import tfrecords

from support import REPO
from support import datasets as fx
from support.weights import eval_config, write_weights_dir
from support.protocol_cases import tiny_model


def _driver(name):
    """psp_tf.cli.<name>'s main taking the flags alone (it wants the program name first, as argv)."""
    module = importlib.import_module(f"psp_tf.cli.{name}")
    return lambda argv: module.main([f"psp-{name}", *argv])


def _exit(main, argv, capsys):
    try:
        code = main(argv) or 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.err


def _assert_one_error(code, err, *expect):
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for text in expect:
        assert text in err, err


def _tree(root):
    """{relative path: bytes} of every file under root."""
    found = {}
    for top, _, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, root)] = open(path, "rb").read()
    return found


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights_dir(tiny_model(), str(tmp_path_factory.mktemp("tools") / "weights"))


def test_convert_never_replaces_a_directory_holding_its_input(tmp_path, capsys):
    main = _driver("convert")
    src = tmp_path / "k" / "src"
    os.makedirs(src)
    (src / "model.caffemodel").write_bytes(b"caffe weights")
    (src / "deploy.prototxt").write_text("name: 'x'")
    before = _tree(tmp_path)
    cases = [(["--output", str(src)], "--output"), (["--output", str(tmp_path / "k")], "--output"),
             (["--output", str(tmp_path / "o"), "--savedmodel", str(src)], "--savedmodel"),
             (["--output", str(tmp_path / "o"), "--savedmodel", str(tmp_path / "o" / "saved")],
              "contains --savedmodel"),
             (["--output", str(tmp_path / "o"), "--prototxt", str(tmp_path / "o" / "deploy.prototxt")],
              "contains --prototxt")]
    for extra, expect in cases:
        code, err = _exit(main, ["--caffemodel", str(src / "model.caffemodel"), *extra, "--overwrite"], capsys)
        _assert_one_error(code, err, expect)
    assert _tree(tmp_path) == before


def test_convert_and_export_onto_a_dangling_symlink_is_one_error_line(tmp_path, capsys, weights):
    convert_main, export_main = _driver("convert"), _driver("export")

    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    (tmp_path / "m.caffemodel").write_bytes(b"")
    code, err = _exit(convert_main, ["--caffemodel", str(tmp_path / "m.caffemodel"), "--output",
                                     str(tmp_path / "link"), "--overwrite"], capsys)
    _assert_one_error(code, err, "link is a dangling symlink")
    code, err = _exit(export_main, ["--weights", weights, "--output", str(tmp_path / "link"), "--overwrite"], capsys)
    _assert_one_error(code, err, "--output", "link is a dangling symlink")
    assert sorted(os.listdir(tmp_path)) == ["link", "m.caffemodel"]


def test_export_never_replaces_its_weights(tmp_path, capsys, weights):
    main = _driver("export")
    before = _tree(weights)
    for output in (weights, os.path.dirname(weights), os.path.join(weights, "saved")):
        code, err = _exit(main, ["--weights", weights, "--output", output, "--overwrite"], capsys)
        _assert_one_error(code, err, "--weights")
    assert _tree(weights) == before


def _folder(tmp_path, n=4):
    return fx.write_folder(str(tmp_path / "folder"), n=n)


def _tfr(prefix, folder, shards):
    return ["psp-write-tfrecords", "--dataset", "folder", "--data_dir", folder, "--split", "train",
            "--dataset_option", "num_classes=3",
            "--output", prefix, "--num_shards", str(shards), "--quiet"]


def test_a_failed_rerun_of_write_tfrecords_keeps_the_good_set(tmp_path, capsys):
    folder, prefix = _folder(tmp_path), str(tmp_path / "tfr2" / "set")
    write_tfrecords.main(_tfr(prefix, folder, 2))
    good = _tree(tmp_path / "tfr2")
    # The second shard's last image goes bad: the rerun fails after the first shard is complete.
    open(os.path.join(folder, "images", "train", "img3.png"), "wb").write(b"\x89PNG\r\n\x1a\n broken")
    code, err = _exit(write_tfrecords.main, _tfr(prefix, folder, 2), capsys)
    _assert_one_error(code, err, "img3.png")
    assert _tree(tmp_path / "tfr2") == good
    assert len(D.open_dataset("tfrecord", str(tmp_path / "tfr2"), "set")) == 4


def test_write_tfrecords_replaces_a_set_of_another_shard_count_whole(tmp_path, capsys):
    folder, prefix = _folder(tmp_path), str(tmp_path / "tfr" / "set")
    write_tfrecords.main(_tfr(prefix, folder, 3))
    (tmp_path / "tfr" / "other.json").write_text("{}")  # another set's files are not touched
    write_tfrecords.main(_tfr(prefix, folder, 2))
    assert sorted(os.listdir(tmp_path / "tfr")) == ["other.json", "set-00000-of-00002.tfrecord",
                                                     "set-00001-of-00002.tfrecord", "set.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "tfr" / "set.json").st_mode & 0o777 == 0o666 & ~umask


def test_write_tfrecords_never_replaces_a_json_that_is_not_a_set(tmp_path, capsys):
    folder, prefix = _folder(tmp_path), str(tmp_path / "x" / "foo")
    os.makedirs(tmp_path / "x")
    (tmp_path / "x" / "foo.json").write_text('{"my": "settings"}')
    code, err = _exit(write_tfrecords.main, _tfr(prefix, folder, 2), capsys)
    _assert_one_error(code, err, "foo.json exists and is not the metadata of a TFRecord set")
    assert sorted(os.listdir(tmp_path / "x")) == ["foo.json"]
    assert (tmp_path / "x" / "foo.json").read_text() == '{"my": "settings"}'


def test_write_tfrecords_and_check_never_write_into_their_input(tmp_path, capsys):
    folder, prefix = _folder(tmp_path), str(tmp_path / "tfr" / "train")
    write_tfrecords.main(_tfr(prefix, folder, 1))
    before = _tree(tmp_path)
    code, err = _exit(write_tfrecords.main, ["psp-write-tfrecords", "--dataset", "tfrecord", "--data_dir", str(tmp_path / "tfr"),
                                             "--split", "train", "--output", prefix, "--quiet"], capsys)
    _assert_one_error(code, err, f"--output {prefix} lies inside --data_dir")
    code, err = _exit(check_data.main, ["psp-check-data", "--dataset", "folder", "--data_dir", folder, "--split", "train",
                                   "--dataset_option", "num_classes=3", "--samples", "1", "--samples_dir",
                                   os.path.join(folder, "images")], capsys)
    _assert_one_error(code, err, "--samples_dir", "lies inside --data_dir")
    assert _tree(tmp_path) == before


def _synthetic_records(tmp_path, **edits):
    records = str(tmp_path / "records")
    dataset = D.open_dataset("synthetic", None, "val", num_images=2)
    tfrecords.write_tfrecords(dataset, os.path.join(records, "val"), 1, progress=False)
    path = os.path.join(records, "val.json")
    meta = json.load(open(path))
    for key, value in edits.items():
        if key == "shard":
            meta["shards"][0]["file"] = value
        else:
            meta[key] = value
    json.dump(meta, open(path, "w"))
    return records


@pytest.mark.parametrize("name", ["../../../X", "ABSOLUTE"])
def test_evaluate_never_writes_a_tfrecord_name_outside_the_output(tmp_path, weights, name):
    from psp_tf.evaluation import run

    escaped = str(tmp_path / "escaped")
    name = escaped if name == "ABSOLUTE" else name
    records = _synthetic_records(tmp_path / "deep" / "er", names=[name, "ok"])
    out = tmp_path / "deep" / "er" / "out"
    config = eval_config(weights=weights, dataset="tfrecord", data_dir=records, split="val", output_dir=str(out))
    with pytest.raises(UserError, match="val.json: image 0 name: .* not a plain file name"):
        run.evaluate(config, log=lambda *a: None)
    written = [os.path.join(top, f) for top, _, files in os.walk(tmp_path) for f in files
               if f.endswith("X.png") or f.startswith("escaped")]
    assert written == [] and not out.exists()


def test_tfrecord_shard_names_and_duplicate_image_names_are_refused(tmp_path, weights):
    from psp_tf.evaluation import run

    records = _synthetic_records(tmp_path / "a", shard="../val-00000-of-00001.tfrecord")
    with pytest.raises(UserError, match="val.json shard: '../val-00000-of-00001.tfrecord' is not a plain"):
        D.open_dataset("tfrecord", records, "val")
    records = _synthetic_records(tmp_path / "b", names=["same", "same"])
    config = eval_config(weights=weights, dataset="tfrecord", data_dir=records, split="val", max_images=2,
                   output_dir=str(tmp_path / "out"))
    with pytest.raises(UserError, match="several images are named 'same'"):
        run.evaluate(config, log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_evaluate_output_dir_apart_from_weights_and_data(tmp_path, weights):
    from psp_tf.evaluation import run

    before = _tree(weights)
    for output in (weights, os.path.join(weights, "eval")):
        with pytest.raises(UserError, match="--output_dir .* --weights"):
            run.evaluate(eval_config(weights=weights, output_dir=output, overwrite=True), log=print)
    folder = _folder(tmp_path)
    with pytest.raises(UserError, match="--output_dir .* is --data_dir"):
        run.evaluate(eval_config(weights=weights, dataset="folder", data_dir=folder, output_dir=folder,
                                       overwrite=True), log=print)
    assert _tree(weights) == before


def test_train_workdir_apart_from_its_inputs(tmp_path, weights):
    from psp_tf.training import config as config_lib

    data = _folder(tmp_path)
    cases = [(dict(dataset="folder", data_dir=data, workdir=os.path.join(data, "run")), "lies inside --data_dir"),
             (dict(tfrecords=str(tmp_path / "tfr"), workdir=str(tmp_path)), "contains --tfrecords"),
             (dict(init=weights, fresh_classifier=True, workdir=weights), "is --init")]
    for fields, expect in cases:
        with pytest.raises(UserError, match=f"--workdir .* {expect}"):
            config_lib.resolve(config_lib.TrainConfig(**fields))
    assert config_lib.resolve(config_lib.TrainConfig(workdir=str(tmp_path / "run"))).workdir == str(tmp_path / "run")


KILLED_WRITER = """
import os, signal, sys
import psp_tf.data as D
from psp_tf.outputs import StagedOutput
from psp_tf.data import tfrecords
commit, calls = StagedOutput.commit, []
def commit_then_die_at_the_second(self):
    calls.append(self.path)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # the first new shard is in, the second and the .json not
    commit(self)
StagedOutput.commit = commit_then_die_at_the_second
tfrecords.write_tfrecords(D.open_dataset("folder", sys.argv[1], "train", num_classes=3), sys.argv[2], 2,
                          progress=False)
"""


@pytest.mark.slow
def test_write_tfrecords_killed_while_the_new_set_moves_in_leaves_a_whole_set(tmp_path, capsys):
    import subprocess
    import sys

    folder, prefix = _folder(tmp_path), str(tmp_path / "tfr" / "set")
    write_tfrecords.main(_tfr(prefix, folder, 2))
    old = [D.open_dataset("tfrecord", str(tmp_path / "tfr"), "set").read(k)[0] for k in range(4)]
    for k in range(4):  # new content, same names and shard count: the new shards replace the old names
        fx.write_image(os.path.join(folder, "images", "train", f"img{k}.png"), fx.image(50 + k))
    env = dict(os.environ, PYTHONPATH=REPO,
               TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, folder, prefix], env=env, timeout=300)
    assert done.returncode == -9
    records = D.open_dataset("tfrecord", str(tmp_path / "tfr"), "set")
    for k in range(4):
        np.testing.assert_array_equal(records.read(k)[0], old[k])  # the old set, whole
    write_tfrecords.main(_tfr(prefix, folder, 2))  # the rerun finishes the job and tidies up
    assert sorted(os.listdir(tmp_path / "tfr")) == ["set-00000-of-00002.tfrecord", "set-00001-of-00002.tfrecord",
                                                     "set.json"]
    records = D.open_dataset("tfrecord", str(tmp_path / "tfr"), "set")
    np.testing.assert_array_equal(records.read(0)[0], fx.image(50))
