"""Every numeric flag of every tool is range-checked before any work: one `error:` line naming the flag,
exit status 2. In-process (each tool's main, SystemExit caught); one subprocess smoke per absl tool.

The values are refused while the flags are parsed, so the data and weights flags name nothing that
exists: before the checks the tools went on to fail on those instead (or, for `check --samples -3`,
looped forever writing PNGs).
"""

import argparse
import dataclasses
import importlib
import os
import subprocess
import sys
import typing
from unittest import mock

import pytest

from psp_tf.errors import UserError
from psp_tf.training import config as config_lib
from support import REPO

NOWHERE = "/nonexistent/psp_tf_test"


def _tools():
    # predict, export and convert are absl drivers (psp_tf/cli): their flags are tested in
    # tests/cli/test_predict.py, tests/test_export.py and tests/cli/test_convert.py.
    modules = {"check": "psp_tf.data.check", "write_tfrecords": "psp_tf.data.write_tfrecords"}
    return {name: importlib.import_module(module) for name, module in modules.items()}


# Arguments that make each tool's command line complete (and point at nothing).
BASE = {
    "check": ["--dataset", "folder", "--data_dir", NOWHERE, "--split", "train"],
    "write_tfrecords": ["--dataset", "folder", "--data_dir", NOWHERE, "--split", "train", "--output", "out/t"],
}

ARGPARSE_CASES = [
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
    ("write_tfrecords", ["--dataset_option", "num_classes=-1"], "--dataset_option num_classes"),
    ("write_tfrecords", ["--num_shards", "0"], "--num_shards"),
    ("write_tfrecords", ["--num_shards", "-1"], "--num_shards"),
    ("write_tfrecords", ["--num_shards", str(2**40)], "--num_shards"),
]


def _run_main(main, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def _assert_one_error(code, err, flag):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert flag in lines[0], err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tool,args,flag", ARGPARSE_CASES, ids=[f"{t}{' '.join(a)}" for t, a, _ in ARGPARSE_CASES])
def test_argparse_tools_refuse_bad_numbers(tool, args, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = _run_main(_tools()[tool].main, BASE[tool] + args, capsys)
    _assert_one_error(code, err, flag)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tool,flag", [("check", "--samples_dir")])
def test_output_onto_a_dangling_symlink_is_refused(tool, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.symlink(str(tmp_path / "missing" / "target"), "link")
    argv = [a for a in BASE[tool]]
    if flag in argv:
        argv[argv.index(flag) + 1] = "link"
    else:
        argv += [flag, "link"] + (["--samples", "1"] if tool == "check" else [])
    code, err = _run_main(_tools()[tool].main, argv, capsys)
    _assert_one_error(code, err, "link is a dangling symlink")
    assert os.listdir(tmp_path) == ["link"]


def _parsers():
    """The ArgumentParser of every argparse tool (captured from its parse_args)."""
    found = {}
    for name, module in _tools().items():
        def capture(parser, argv=None, namespace=None, name=name):
            found[name] = parser
            raise SystemExit(0)
        with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(SystemExit):
            module.parse_args(BASE[name])
    return found


def test_every_numeric_argparse_flag_has_a_range_check():
    # A new numeric flag with plain `type=int/float` would accept -3, 0, nan and inf unseen.
    for name, parser in _parsers().items():
        for action in parser._actions:
            if action.type in (int, float):
                pytest.fail(f"{name} {action.option_strings}: plain type={action.type.__name__}, "
                            f"use psp_tf.checks.arg_type")


# ---------------------------------------------------------------- evaluate.py (absl), in-process

@pytest.fixture(scope="module")
def evaluate_flags():
    sys.path.insert(0, REPO)
    import evaluate
    from absl import flags

    return evaluate, flags.FLAGS


EVALUATE_CASES = [
    (["--batch_size=0"], "--batch_size"),
    (["--batch_size=-1"], "--batch_size"),
    (["--max_images=0"], "--max_images"),
    (["--max_images=-1"], "--max_images"),
    (["--tolerance=nan", "--expect=paper"], "--tolerance"),
    (["--tolerance=inf", "--expect=paper"], "--tolerance"),
    (["--tolerance=-0.1", "--expect=paper"], "--tolerance"),
    (["--tolerance=0.5"], "--tolerance needs --expect paper"),
    (["--tpu=node-1"], "--tpu needs --strategy tpu"),
    (["--overwrite"], "--overwrite needs --output_dir"),
    (["--cityscapes_submission"], "--cityscapes_submission needs --output_dir"),
]


@pytest.mark.parametrize("args,flag", EVALUATE_CASES, ids=[" ".join(a) for a, _ in EVALUATE_CASES])
def test_evaluate_flags_are_checked_while_parsing(evaluate_flags, args, flag, capsys):
    evaluate, FLAGS = evaluate_flags
    FLAGS.unparse_flags()
    try:
        code, err = _run_main(evaluate.parse_absl_flags, ["evaluate.py", f"--weights={NOWHERE}", *args], capsys)
    finally:
        FLAGS.unparse_flags()
    _assert_one_error(code, err, flag)


def test_evaluate_accepts_its_defaults_and_a_good_combination(evaluate_flags, capsys):
    evaluate, FLAGS = evaluate_flags
    FLAGS.unparse_flags()
    try:
        evaluate.parse_absl_flags(["evaluate.py", "--weights=w", "--expect=paper", "--tolerance=0.5",
                                   "--strategy=tpu", "--tpu=n", "--output_dir=o", "--overwrite"])
    finally:
        FLAGS.unparse_flags()
    assert capsys.readouterr().err == ""


def test_every_numeric_evaluate_flag_has_a_validator(evaluate_flags):
    from absl import flags

    _, FLAGS = evaluate_flags
    numeric = [f for f in FLAGS.get_flags_for_module("evaluate")
               if isinstance(f.parser, (flags.IntegerParser, flags.FloatParser))]
    assert numeric and all(f.validators for f in numeric), [f.name for f in numeric if not f.validators]


def test_evaluate_from_a_namespace_checks_the_same_rules():
    from psp_tf.evaluation import cli

    flags = argparse.Namespace(scales="1.0", batch_size=2, max_images=None, tolerance=float("nan"),
                               strategy="default", tpu=None)
    with pytest.raises(UserError, match="--tolerance=nan"):
        cli.evaluate_from_flags(flags)
    flags.tolerance, flags.tpu = 0.3, "node"
    with pytest.raises(UserError, match="--tpu='node' needs --strategy tpu"):
        cli.evaluate_from_flags(flags)


# ---------------------------------------------------------------- train.py: TrainConfig, in-process

TRAIN_CASES = [
    dict(lr=float("inf")), dict(lr=float("nan")), dict(momentum=float("nan")), dict(poly_power=float("inf")),
    dict(head_lr_mult=float("inf")), dict(weight_decay=float("inf")), dict(l2sp_alpha=float("nan"), init="x"),
    dict(aux_weight=float("nan")), dict(seed=-1), dict(seed=2**32), dict(steps=2**40), dict(batch_size=0),
    dict(crop_size=0), dict(crop_size=-5), dict(keep_checkpoints=0), dict(eval_every=-1),
    dict(checkpoint_every=2**31),
]


@pytest.mark.parametrize("overrides", TRAIN_CASES, ids=[str(c) for c in TRAIN_CASES])
def test_train_config_refuses_non_finite_and_out_of_range_values(overrides):
    flag = next(iter(overrides))
    with pytest.raises(UserError) as info:
        config_lib.resolve(config_lib.TrainConfig(**overrides))
    assert str(info.value).startswith(f"--{flag}=") and "\n" not in str(info.value)


def test_every_numeric_train_flag_has_a_range():
    numeric = []
    for field in dataclasses.fields(config_lib.TrainConfig):
        kinds = set(typing.get_args(field.type)) | {field.type}
        if kinds & {int, float} and field.type is not bool:
            numeric.append(field.name)
    assert set(numeric) - {"crop_size"} <= set(config_lib.RANGES), set(numeric) - set(config_lib.RANGES)
    assert len(numeric) > 10


# ---------------------------------------------------------------- one subprocess smoke per absl tool

@pytest.mark.parametrize("script,args,flag", [
    ("train.py", ["--workdir", "run", "--lr", "inf"], "--lr=inf"),
    ("evaluate.py", ["--weights", NOWHERE, "--tolerance", "nan", "--expect", "paper"], "--tolerance=nan"),
])
def test_absl_tools_refuse_a_bad_number_as_one_line(script, args, flag, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    _assert_one_error(done.returncode, done.stderr, flag)
    assert os.listdir(tmp_path) == []


def test_range_rules():
    from psp_tf import checks

    assert checks.POSITIVE_INT.parse("3") == 3 and checks.POSITIVE.parse("1e-3") == 1e-3
    for rule, text in [(checks.POSITIVE_INT, "0"), (checks.POSITIVE_INT, "2.5"), (checks.NON_NEGATIVE, "-1e-9"),
                       (checks.POSITIVE, "inf"), (checks.NON_NEGATIVE, "nan"), (checks.FRACTION, "1")]:
        with pytest.raises(ValueError, match=repr(text)):
            rule.parse(text)
    assert checks.FRACTION.problem(0.0) is None and checks.SEED.problem(2**32 - 1) is None
