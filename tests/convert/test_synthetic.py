"""psp-synthetic-caffemodel: the dry-run file is the session's verified ADE20K net, written by the tool."""

import os

import numpy as np
import pytest

from psp_tf.cli import synthetic_caffemodel
from psp_tf.convert import detect, reader, synthetic


def _run(capsys, *argv):
    code = synthetic_caffemodel.main(["psp-synthetic-caffemodel", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_round_trip_gives_the_verified_net(tmp_path, capsys, ade_file):
    path = str(tmp_path / "pspnet50_ADE20K.caffemodel")
    code, out, err = _run(capsys, "--preset", "pspnet50_ade20k", "--output", path, "--seed", "1",
                          "--training_layers")
    assert code == 0, err
    assert f"psp-convert --caffemodel {path}" in out
    written, reference = reader.read_caffemodel(path), reader.read_caffemodel(ade_file)
    assert detect.resolve_preset(detect.describe(written, path), path) == "pspnet50_ade20k"
    # ade_file (the one test_parity converts with --verify) differs only in its legacy blob layout.
    assert [(l.name, l.type) for l in written.layers] == [(l.name, l.type) for l in reference.layers]
    for mine, theirs in zip(written.layers, reference.layers):
        assert len(mine.blobs) == len(theirs.blobs)
        for a, b in zip(mine.blobs, theirs.blobs):
            np.testing.assert_array_equal(a.reshape(b.shape), b)
    deploy = [l.name for l in synthetic.load_prototxt_net(synthetic.PRESET_PROTOTXTS["pspnet50_ade20k"]).layer]
    assert [l.name for l in written.layers if l.name in deploy] == deploy  # the author's list, in order
    code, _, err = _run(capsys, "--preset", "pspnet50_ade20k", "--output", path)
    assert code == 2 and err.strip() == f"error: --output {path} already exists (pass --overwrite to replace it)"


def test_bad_flags_are_one_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, expect in [(["--preset", "pspnet18", "--output", "x"], "--preset"),
                         (["--output", "x"], "--preset is required"),
                         (["--preset", "pspnet50_ade20k", "--output", "x", "--seed", "-1"], "--seed")]:
        code, _, err = _run(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert os.listdir(tmp_path) == []
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "pspnet101_cityscapes" in out and "psp-convert --caffemodel dry/" in out
