"""psp-convert (`python -m convert`) on every bad input of issue 3: one `error:` line, exit 2, nothing
written; in-process through the driver's main, one subprocess."""

import json
import os

import numpy as np
import pytest

from psp_tf.convert import caffe_pb, synthetic

from support.caffe_nets import leftovers, resnet50_like_net, run_convert, v1_net
from support import REPO
from support.cli import run_in_turn

pytestmark = pytest.mark.heavy(30)


def _assert_refused(capsys, output, *argv, expect=()):
    code, _, err = run_convert(capsys, "--output", str(output), *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expect:
        assert text in lines[0], lines[0]
    assert leftovers(output) == [], "a failed run left files behind"
    return lines[0]


@pytest.fixture(scope="module")
def ade_net():
    """PSPNet50-ADE20K (seed 0), built once, with each layer serialised on its own and a copy of each
    without its blobs: a broken copy re-serialises only the layers a test changes (building the net
    and serialising all 187 MB of it take seconds; a NetParameter's layers are a repeated field, so the
    layers' serialisations concatenate into the file one serialisation of the whole net would be)."""
    net = synthetic.build_net("pspnet50_ADE20K_473.prototxt", seed=0)
    parts = {layer.name: caffe_pb.NetParameter(layer=[layer]).SerializeToString() for layer in net.layer}
    return net, parts, {layer.name: _without_blobs(layer) for layer in net.layer}


def _without_blobs(layer):
    bare = caffe_pb.LayerParameter()
    for field, value in layer.ListFields():
        if field.name == "blobs":
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(bare, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(bare, field.name).CopyFrom(value)
        else:
            setattr(bare, field.name, value)
    return bare


def _broken_ade(tmp_path, ade_net, mutate, touched):
    """Writes the net after `mutate(net)`, which may change only the layers named in `touched` (it may
    delete any); the others are written as built."""
    net, parts, bare = ade_net
    copy = caffe_pb.NetParameter(name=net.name)
    for layer in net.layer:
        copy.layer.add().CopyFrom(layer if layer.name in touched else bare[layer.name])
    mutate(copy)
    chunks = [caffe_pb.NetParameter(name=copy.name).SerializeToString()]
    for layer in copy.layer:
        if layer.name in touched or layer.name not in parts:
            chunks.append(caffe_pb.NetParameter(layer=[layer]).SerializeToString())
        else:
            assert layer == bare[layer.name], f"{layer.name} changed: name it in `touched`"
            chunks.append(parts[layer.name])
    path = tmp_path / "broken.caffemodel"
    path.write_bytes(b"".join(chunks))
    return str(path)


def test_empty_random_text_v1_other_network(tmp_path, capsys):
    out = tmp_path / "out"
    cases = {
        "empty.caffemodel": (b"", "is empty"),
        "random.caffemodel": (np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                              "caffemodel"),
        "deploy.caffemodel": (open(f"{synthetic.SPECS_DIR}/pspnet101_VOC2012_473.prototxt", "rb").read(),
                              "text file"),
        "v1.caffemodel": (v1_net().SerializeToString(), "V1-format"),
        "resnet50.caffemodel": (resnet50_like_net().SerializeToString(), "model of another network"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        _assert_refused(capsys, out, "--caffemodel", str(path), expect=(str(path), expected))


@pytest.mark.slow
def test_truncated(tmp_path, capsys, ade_file):
    cut = tmp_path / "cut.caffemodel"
    data = open(ade_file, "rb").read()
    cut.write_bytes(data[: len(data) * 2 // 3])
    _assert_refused(capsys, tmp_path / "out", "--caffemodel", str(cut), expect=("truncated or corrupt",))


@pytest.mark.slow
def test_missing_unexpected_and_misshapen_layers_listed_together(tmp_path, capsys, ade_net):
    def damage(net):
        keep = [l for l in net.layer if l.name not in ("conv5_4", "conv4_3_1x1_reduce/bn")]
        del net.layer[:]
        net.layer.extend(keep)
        renamed = next(l for l in net.layer if l.name == "conv5_3_pool2_conv/bn")
        renamed.name = "conv5_3_pool2_conv/scale"  # a deploy-path weight layer the model does not have
        conv = next(l for l in net.layer if l.name == "conv3_1_1x1_proj")
        del conv.blobs[:]
        blob = conv.blobs.add()
        blob.shape.dim.extend([512, 128, 1, 1])
        caffe_pb.set_blob_values(blob, np.zeros(512 * 128, np.float32))
        bn = next(l for l in net.layer if l.name == "conv2_1_1x1_proj/bn")
        del bn.blobs[3]

    touched = {"conv5_3_pool2_conv/bn", "conv3_1_1x1_proj", "conv2_1_1x1_proj/bn"}
    line = _assert_refused(capsys, tmp_path / "out", "--caffemodel", _broken_ade(tmp_path, ade_net, damage, touched))
    assert "missing 3 layer(s): conv4_3_1x1_reduce_bn, conv5_3_pool2_conv_bn, conv5_4" in line
    assert "unexpected 1 weight layer(s): conv5_3_pool2_conv/scale" in line
    assert "conv3_1_1x1_proj blob 0 file [512, 128, 1, 1] vs model [512, 256, 1, 1]" in line
    assert "conv2_1_1x1_proj/bn: file has 3 blob(s), model needs 4" in line


def test_preset_contradicting_file(tmp_path, capsys, ade_file):
    line = _assert_refused(capsys, tmp_path / "out", "--caffemodel", ade_file, "--preset", "pspnet101_voc2012",
                           expect=("--preset pspnet101_voc2012 contradicts", ade_file))
    assert "blocks per stage (3, 4, 6, 3) in the file vs (3, 4, 23, 3) in the preset" in line
    assert "classes 150 in the file vs 21 in the preset" in line
    _assert_refused(capsys, tmp_path / "out", "--caffemodel", ade_file, "--preset", "nope", expect=("unknown",))


def test_output_exists_or_unwritable(tmp_path, capsys, ade_file):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, _, err = run_convert(capsys, "--caffemodel", ade_file, "--output", str(existing))
    assert code == 2 and "already exists (pass --overwrite" in err and err.count("\n") == 1
    assert (existing / "keep.txt").read_text() == "mine"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _assert_refused(capsys, blocker / "out", "--caffemodel", ade_file, expect=("cannot write output",))
    saved = tmp_path / "saved"
    saved.mkdir()
    _assert_refused(capsys, tmp_path / "out2", "--caffemodel", ade_file, "--savedmodel", str(saved),
                    expect=("--savedmodel", "already exists"))


def test_prototxt_contradicting_file(tmp_path, capsys, ade_file):
    _assert_refused(capsys, tmp_path / "out", "--caffemodel", ade_file, "--prototxt",
                    f"{synthetic.SPECS_DIR}/pspnet101_cityscapes_713.prototxt", expect=("declares input 713x713",))
    _assert_refused(capsys, tmp_path / "out", "--caffemodel", ade_file, "--verify", "--prototxt",
                    f"{synthetic.SPECS_DIR}/pspnet101_VOC2012_473.prototxt",
                    expect=("has layers without weights in", "conv4_7_1x1_reduce"))


def test_prototxt_with_an_input_that_is_not_4d(tmp_path, capsys, ade_file):
    # A 3-dim input_shape passed the crop comparison's slice before and failed later, far from the cause.
    source = open(f"{synthetic.SPECS_DIR}/pspnet50_ADE20K_473.prototxt").read()
    four = "input_dim: 1\ninput_dim: 3\ninput_dim: 473\ninput_dim: 473\n"
    assert four in source
    three_dims = source.replace(four, "input_dim: 1\ninput_dim: 3\ninput_dim: 473\n")
    odd = tmp_path / "three_dims.prototxt"
    odd.write_text(three_dims)
    _assert_refused(capsys, tmp_path / "out", "--caffemodel", ade_file, "--prototxt", str(odd),
                    expect=(f"--prototxt {odd} declares the input shape [1, 3, 473], not [batch, 3, height, width]",))


@pytest.mark.slow
def test_convert_then_overwrite(tmp_path, capsys, ade_file):
    out = tmp_path / "converted"
    code, stdout, err = run_convert(capsys, "--caffemodel", ade_file, "--output", str(out))
    assert code == 0, err
    assert "preset pspnet50_ade20k" in stdout
    assert "skipped training-only layers: conv4_aux, conv4_aux/bn, conv6_aux" in stdout
    assert sorted(os.listdir(out)) == ["checkpoint", "ckpt.data-00000-of-00001", "ckpt.index", "config.json",
                                       "model.weights.h5"] or sorted(os.listdir(out)) == [
        "ckpt.data-00000-of-00001", "ckpt.index", "config.json", "model.weights.h5"]
    meta = json.load(open(out / "config.json"))
    assert meta["preset"] == "pspnet50_ade20k" and meta["num_classes"] == 150 and meta["crop_size"] == [473, 473]
    assert meta["source"]["size"] == os.path.getsize(ade_file) and len(meta["source"]["sha256"]) == 64
    assert meta["source_channel_order"] == "BGR" and meta["input_channel_order"] == "RGB"
    assert meta["bgr_folded_into"] == "conv1_1_3x3_s2" and meta["verification"] is None
    assert meta["class_names"][0] == "wall" and meta["config"]["blocks"] is None
    assert leftovers(out) == ["converted"]
    code, _, err = run_convert(capsys, "--caffemodel", ade_file, "--output", str(out), "--overwrite")
    assert code == 0, err
    assert leftovers(out) == ["converted"]


@pytest.mark.slow
def test_module_entry_point_exit_code(tmp_path):
    """The one real process of `python -m convert` (the checkout's shim) and of psp-synthetic-caffemodel
    (`python -m psp_tf.cli.synthetic_caffemodel`), in one interpreter (support/cli.py): each refuses its
    input with one line, exit 2, nothing written."""
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    runs = run_in_turn([["-m", "psp_tf.cli.synthetic_caffemodel", "--preset", "pspnet50_ade20k", "--output", empty],
                        ["-m", "convert", "--caffemodel", empty, "--output", tmp_path / "out"]], cwd=REPO, timeout=300)
    assert runs.codes == [2, 2], runs.stderr
    assert runs.stderr[0] == f"error: --output {empty} already exists (pass --overwrite to replace it)\n"
    assert empty.read_bytes() == b""
    assert runs.stderr[1].strip().splitlines() == [f"error: {empty} is empty (0 bytes); expected a binary .caffemodel"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_verify_on_a_layer_the_reference_cannot_run(tmp_path, capsys, ade_net):
    def unknown_type(net):
        next(l for l in net.layer if l.name == "conv1_1_3x3_s2/relu").type = "PReLU"

    _assert_refused(capsys, tmp_path / "out", "--caffemodel", _broken_ade(tmp_path, ade_net, unknown_type,
                                                                        {"conv1_1_3x3_s2/relu"}), "--verify",
                    expect=("--verify cannot run the layer list", "'PReLU'", "pass the deploy prototxt"))


def test_flags_refused_while_parsing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(str(tmp_path / "missing" / "target"), "link")
    nowhere = "/nonexistent/psp_tf_test"
    for argv, expect in [(["--caffemodel", nowhere, "--output", "link"], "link is a dangling symlink"),
                         (["--caffemodel", nowhere, "--output", "out", "--savedmodel", "link"],
                          "link is a dangling symlink"),
                         (["--output", "out"], "--caffemodel is required"),
                         (["--caffemodel", nowhere, "--output", "out", "extra"], "unexpected argument 'extra'")]:
        code, _, err = run_convert(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert os.listdir(tmp_path) == ["link"]
    code, out, _ = run_convert(capsys, "--help")
    assert code == 0 and out.startswith("psp-convert: the author's .caffemodel")
    assert "pspnet50_ade20k" in out and "--verify" in out  # the preset flag lists the presets


def test_convert_file_takes_a_config(tmp_path, ade_file):
    from psp_tf.convert.config import ConvertConfig
    from psp_tf.convert.run import convert_file
    from psp_tf.errors import UserError

    with pytest.raises(UserError, match="--preset nope is unknown; valid presets: pspnet101_cityscapes"):
        ConvertConfig(caffemodel=ade_file, output=str(tmp_path / "o"), preset="nope")
    with pytest.raises(UserError, match="--output is required"):
        ConvertConfig(caffemodel=ade_file)
    lines = []
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write output"):
        convert_file(ConvertConfig(caffemodel=ade_file, output=str(blocker / "out")), log=lines.append)
    assert lines == [] and blocker.read_text() == "x"
