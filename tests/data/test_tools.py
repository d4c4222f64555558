"""The data tools (psp-check-data, psp-write-tfrecords) as drivers, their configs, and the typed reader
options: every bad flag or option is one `error:` line naming it, exit status 2, nothing written.

In-process through the drivers' `main` (flags are parsed before TensorFlow is needed) and the
config-taking library functions; the one subprocess smoke per tool is in tests/cli/test_errors.py.
"""

import dataclasses
import os
import subprocess
import sys
import typing

import numpy as np
import pytest

from psp_tf.cli import check_data, write_tfrecords
from psp_tf.data import options
from psp_tf.data.config import AugmentConfig, CheckConfig, WriteTFRecordsConfig
from psp_tf.errors import UserError
from psp_tf.presets import CAFFE_MEAN_RGB, get_preset

from support import REPO
from support import datasets as fx

NOWHERE = "/nonexistent/psp_tf_test"
BASE = {
    "check": ["--dataset", "folder", "--data_dir", NOWHERE, "--split", "train"],
    "write_tfrecords": ["--dataset", "folder", "--data_dir", NOWHERE, "--split", "train", "--output", "out/t"],
}
MAINS = {"check": check_data.main, "write_tfrecords": write_tfrecords.main}

# The values are refused while the flags are parsed, so the data flags name nothing that exists: before
# the checks the tools went on to fail on those instead (or, for `check --samples -3`, looped forever).
FLAG_CASES = [
    ("check", ["--samples", "-3", "--samples_dir", "s"], "--samples"),
    ("check", ["--samples", "1.5", "--samples_dir", "s"], "--samples"),
    ("check", ["--limit", "-1"], "--limit"),
    ("check", ["--limit", "0"], "--limit"),
    ("check", ["--limit", "many"], "--limit"),
    ("check", ["--samples", "1", "--samples_dir", "s", "--crop", "0"], "--crop"),
    ("check", ["--samples", "1", "--samples_dir", "s", "--crop", "-5"], "--crop"),
    ("check", ["--samples", "1", "--samples_dir", "s", "--crop", "2"], "--crop"),  # the blur pads 2
    ("check", ["--samples", "1", "--samples_dir", "s", "--seed", "-1"], "--seed"),
    ("check", ["--samples", "2"], "--samples needs --samples_dir"),
    ("check", ["--samples_dir", "s"], "--samples_dir needs --samples"),
    ("check", ["--crop", "97"], "--crop needs --samples"),
    ("check", ["--dataset_option", "num_classes=100000"], "--dataset_option num_classes"),
    ("check", ["--dataset_option", "num_classes=NaN"], "--dataset_option num_classes"),
    ("check", ["--dataset_option", "num_classes"], "--dataset_option 'num_classes' must be key=value"),
    ("check", ["--dataset_option", "colour=red"], "unknown option(s) colour"),
    ("write_tfrecords", ["--dataset_option", "num_classes=-1"], "--dataset_option num_classes"),
    ("write_tfrecords", ["--num_shards", "0"], "--num_shards"),
    ("write_tfrecords", ["--num_shards", "-1"], "--num_shards"),
    ("write_tfrecords", ["--num_shards", str(2**40)], "--num_shards"),
    ("write_tfrecords", ["--dataset", "imagenet"], "--dataset"),
]


def _run(tool, argv, capsys):
    code = MAINS[tool](["tool", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_error(code, err, expected):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert expected in lines[0], err


@pytest.mark.parametrize("tool,args,expected", FLAG_CASES, ids=[f"{t}{' '.join(a)}" for t, a, _ in FLAG_CASES])
def test_data_tools_refuse_bad_flags_as_one_line(tool, args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(tool, BASE[tool] + args, capsys)
    _assert_one_error(code, err, expected)
    assert os.listdir(tmp_path) == []


def test_samples_onto_a_dangling_symlink_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.symlink(str(tmp_path / "missing" / "target"), "link")
    code, _, err = _run("check", BASE["check"] + ["--samples", "1", "--samples_dir", "link"], capsys)
    _assert_one_error(code, err, "link is a dangling symlink")
    assert os.listdir(tmp_path) == ["link"]


@pytest.mark.parametrize("config_cls", [CheckConfig, WriteTFRecordsConfig])
def test_every_numeric_data_tool_setting_has_a_rule(config_cls):
    # A new numeric field without a rule would accept -3, 0, nan and inf unseen.
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        kinds = set(typing.get_args(hints[field.name])) | {hints[field.name]}
        if kinds & {int, float} and bool not in kinds:
            assert field.metadata["psp_tf.setting"].rule is not None, field.name


def test_help_answers_before_tensorflow_loads():
    # --help prints the driver's docstring and its flags without importing TensorFlow (4-19 s).
    code = ("import sys; from psp_tf.cli import check_data, write_tfrecords; "
            "[m.main(['x', '--help']) for m in (check_data, write_tfrecords)]; "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "psp-check-data --dataset voc2012" in done.stdout and "--samples_dir" in done.stdout
    assert "psp-write-tfrecords --dataset ade20k" in done.stdout and "--num_shards" in done.stdout


# ---- typed reader options ----

@pytest.mark.parametrize("dataset,pairs,expected", [
    ("synthetic", ["num_images=8", "seed=3"], options.SyntheticOptions(num_images=8, seed=3)),
    ("synthetic", ["num_images=8.0"], options.SyntheticOptions(num_images=8)),
    ("cityscapes", ["coarse=true"], options.CityscapesOptions(coarse=True)),
    ("cityscapes", ["coarse=False"], options.CityscapesOptions(coarse=False)),
    ("voc_aug", ["voc_dir=3", "sbd_dir=/d/sbd"], options.VocAugOptions(voc_dir="3", sbd_dir="/d/sbd")),
    ("folder", ["num_classes=2", "class_names=sky, road"], options.FolderOptions(2, "sky, road")),
    ("folder", ['num_classes=2', 'class_names=["a", "b"]', "palette=[[0,0,0],[9,9,9]]"],
     options.FolderOptions(2, ("a", "b"), ((0, 0, 0), (9, 9, 9)))),
    ("tfrecord", [], options.NoOptions()),
])
def test_options_parse_into_the_readers_typed_record(dataset, pairs, expected):
    parsed = options.parse(dataset, pairs)
    assert parsed == expected and type(parsed) is type(expected)
    assert options.parse(dataset, options.to_strings(parsed)) == parsed


@pytest.mark.parametrize("dataset,pairs,expected", [
    # Before, "True" was not JSON and reached the reader as the text 'True' (and 'no' as truthy 'no').
    ("cityscapes", ["coarse=no"], "--dataset_option coarse='no' must be true or false"),
    ("cityscapes", ["coarse=1"], "--dataset_option coarse=1 must be true or false"),
    ("voc_aug", ["voc_dir=[1]"], "--dataset_option voc_dir=[1] must be a path"),
    ("synthetic", ["seed=1", "seed=2"], "--dataset_option seed is given twice"),
    ("folder", [], "folder: option num_classes (a positive integer) is required"),
    ("folder", ["num_classes=3", "palette=[[0,0,0],[0,0,0],[0,0,256]]"], "palette: needs 3 RGB triples, got 3"),
    ("folder", ["num_classes=2", 'class_names=["a"]'], "class_names: 1 names given for num_classes=2"),
    ("ade20k", ["coarse=true"], "dataset ade20k: unknown option(s) coarse; valid options: none"),
    ("nope", [], "unknown dataset 'nope'"),
])
def test_bad_options_are_one_line_naming_the_option(dataset, pairs, expected):
    with pytest.raises(UserError) as info:
        options.parse(dataset, pairs)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_tool_config_parses_its_options_once_when_made():
    config = CheckConfig(dataset="synthetic", split="val", dataset_options=["num_images=3"])
    assert config.reader_options == options.SyntheticOptions(num_images=3)
    assert config.dataset_options == ("num_images=3",)
    with pytest.raises(UserError, match="--dataset_option num_images=0 must be"):
        WriteTFRecordsConfig(dataset="synthetic", split="val", output="o", dataset_options=("num_images=0",))


# ---- the augmentation's config ----

def test_augment_config_takes_the_networks_mean_and_round_trips_through_json():
    import json

    network = get_preset("tiny", mean=(1.0, 2.0, 3.0))
    config = AugmentConfig.for_network(network)
    assert config.mean == (1.0, 2.0, 3.0) and config.scale_range == (0.5, 2.0)
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AugmentConfig.none(CAFFE_MEAN_RGB).blur_prob == 0.0
    with pytest.raises(TypeError):
        AugmentConfig()  # no default mean: whoever builds it gives the network's
    with pytest.raises(UserError, match="unknown keys"):
        AugmentConfig.from_dict({"mean": [0, 0, 0], "colour": 1})


def test_the_padding_is_the_configs_mean():
    import tensorflow as tf

    from psp_tf.data import augment

    image, label = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)
    for mean in ((10.0, 20.0, 30.0), CAFFE_MEAN_RGB):
        out, out_label = augment.augment_example(tf.constant(image), tf.constant(label), (12, 12),
                                                 tf.constant([0, 0], tf.int64), AugmentConfig.none(mean))
        np.testing.assert_allclose(out.numpy()[0, 0], mean, rtol=0, atol=1e-4)  # float32 of the mean
        assert out_label.numpy()[0, 0] == 255


# ---- the check tool's samples ----

def test_check_never_replaces_existing_samples(tmp_path, capsys):
    out_dir = tmp_path / "samples"
    out_dir.mkdir()
    (out_dir / "sample_001.png").write_bytes(b"mine")
    config = CheckConfig(dataset="synthetic", split="val", dataset_options=("num_images=1",), samples=2,
                         samples_dir=str(out_dir), crop=9)
    from psp_tf.data import check

    with pytest.raises(UserError, match=r"sample_001.png exists"):
        check.check(config)
    assert sorted(os.listdir(out_dir)) == ["sample_001.png"] and (out_dir / "sample_001.png").read_bytes() == b"mine"


def test_check_refuses_a_sample_opencv_cannot_encode(tmp_path, monkeypatch):
    from psp_tf.data import check

    monkeypatch.setattr(check.cv2, "imencode", lambda ext, image: (False, None))
    # A one-image folder dataset (6x8): the sample writer is the same for every reader, and rendering
    # a synthetic image first cost ~1.5 s.
    root = fx.write_folder(str(tmp_path / "folder"), n=1)
    config = CheckConfig(dataset="folder", data_dir=root, split="train", dataset_options=("num_classes=3",),
                         samples=1, samples_dir=str(tmp_path / "s"), crop=9)
    with pytest.raises(UserError, match="could not encode"):
        check.check(config, out=open(os.devnull, "w"))
    assert os.listdir(tmp_path / "s") == []


def test_check_colours_ignore_white_through_the_shared_palette_lookup():
    from psp_tf.data import check

    coloured = check.colour_label(np.array([[0, 1, 255, 7]], np.uint8), ((1, 2, 3), (4, 5, 6)))
    assert coloured.tolist() == [[[1, 2, 3], [4, 5, 6], [255, 255, 255], [255, 255, 255]]]


def test_write_tfrecords_from_a_config(tmp_path):
    from psp_tf.data import registry, write_tfrecords as writer

    root = fx.write_folder(str(tmp_path / "folder"), n=3)
    config = WriteTFRecordsConfig(dataset="folder", data_dir=root, split="train", output=str(tmp_path / "r" / "t"),
                                  dataset_options=("num_classes=3",), num_shards=2, quiet=True)
    dataset, meta = writer.write(config)
    assert meta["num_examples"] == 3 and len(meta["shards"]) == 2
    assert writer.summary(config, dataset, meta).startswith("wrote 3 examples of folder train to 2 shard(s)")
    records = registry.open_dataset("tfrecord", str(tmp_path / "r"), "t")
    # A set written from a set keeps each image's stored bytes (not a re-encoding of its pixels).
    again = dataclasses.replace(config, dataset="tfrecord", data_dir=str(tmp_path / "r"), split="t",
                                dataset_options=(), output=str(tmp_path / "r2" / "t"))
    writer.write(again)
    copied = registry.open_dataset("tfrecord", str(tmp_path / "r2"), "t")
    for a, b in zip(records.examples_in_order(), copied.examples_in_order()):
        assert a.image_bytes == b.image_bytes and a.name == b.name
        np.testing.assert_array_equal(a.label, b.label)


@pytest.mark.parametrize("samples_dir,expected", [("afile", "--samples_dir afile is a file, not a directory"),
                                                  ("afile/sub", "--samples_dir afile/sub lies under afile, which is a "
                                                                "file, not a directory")])
def test_a_samples_dir_that_is_a_file_is_refused_before_the_scan(samples_dir, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("hi")
    code, _, err = _run("check", ["--dataset", "synthetic", "--split", "train", "--dataset_option", "num_images=3",
                                  "--samples", "2", "--samples_dir", samples_dir], capsys)
    _assert_one_error(code, err, expected)
    assert os.listdir(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == "hi"


@pytest.mark.parametrize("output", ["shards/", "shards", "shards/..", "shards/../new/", "shards/../new/."])
def test_write_tfrecords_to_a_directory_is_refused(output, tmp_path, monkeypatch, capsys):
    # The output is a name prefix: a directory there would get its shards beside it, named after it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    code, _, err = _run("write_tfrecords", ["--dataset", "synthetic", "--split", "train", "--dataset_option",
                                            "num_images=2", "--output", output], capsys)
    _assert_one_error(code, err, "names a directory, but it is the shards' name prefix: give DIR/NAME")
    assert os.listdir(tmp_path) == ["shards"] and os.listdir(tmp_path / "shards") == []
