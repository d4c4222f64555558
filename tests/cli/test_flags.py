"""Every numeric flag of every tool is range-checked before any work: one `error:` line naming the flag,
exit status 2. In-process, through each driver's main (every tool is a driver in psp_tf/cli).

The values are refused while the flags are parsed, so the data and weights flags name nothing that
exists: before the checks the tools went on to fail on those instead (or, for `check --samples -3`,
looped forever writing PNGs).
"""

import dataclasses
import importlib
import os
import pathlib
import typing

import pytest
from absl import flags

from psp_tf import settings
from psp_tf.cli import driver
from psp_tf.errors import UserError
from psp_tf.training import config as config_lib

NOWHERE = "/nonexistent/psp_tf_test"


DRIVERS = sorted(p.stem for p in pathlib.Path(driver.__file__).parent.glob("*.py")
                 if p.stem not in ("__init__", "driver"))


def _driver(name):
    return importlib.import_module(f"psp_tf.cli.{name}")


def _assert_one_error(code, err, flag):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert flag in lines[0], err


def _flags_of(name, kinds):
    module = _driver(name)
    return [module.FLAGS[f] for f in module.FLAGS if isinstance(module.FLAGS[f].parser, kinds)]


def test_every_tool_is_a_driver():
    assert set(DRIVERS) >= {"train", "evaluate", "convert", "predict", "export", "check_data", "write_tfrecords",
                            "synthetic_caffemodel"}


@pytest.mark.parametrize("name", DRIVERS)
def test_every_numeric_flag_has_a_range_check(name):
    """A numeric setting declared without a rule would accept -3, 0, nan and inf unseen."""
    numeric = _flags_of(name, (flags.IntegerParser, flags.FloatParser))
    assert all(f.validators for f in numeric), [f.name for f in numeric if not f.validators]


def _output_flags(kinds=("output",)):
    """(driver, flag) for every setting declared output=True (a path the tool writes), or any of `kinds`."""
    found = []
    for name in DRIVERS:
        module = _driver(name)
        for config_cls in {c for c in vars(module).values() if dataclasses.is_dataclass(c) and isinstance(c, type)}:
            found += [(name, settings.flag_name(f)) for f in dataclasses.fields(config_cls)
                      if any(getattr(settings.declared(f), kind) for kind in kinds)
                      and settings.flag_name(f) in module.FLAGS]
    return sorted(set(found))


def _config_or_error(name, argv):
    """What config_from_flags makes of `argv` for the tool `name`'s config: the config, or the error."""
    module = _driver(name)
    config_cls = next(c for c in vars(module).values() if dataclasses.is_dataclass(c) and isinstance(c, type)
                      and any(settings.flag_name(f) in module.FLAGS for f in dataclasses.fields(c)))
    module.FLAGS.unparse_flags()
    module.FLAGS([name, *argv])
    exclude = [f.name for f in dataclasses.fields(config_cls) if settings.flag_name(f) not in module.FLAGS]
    try:
        return driver.config_from_flags(config_cls, module.FLAGS, exclude=exclude)
    except UserError as e:
        return f"UserError: {e}"
    finally:
        module.FLAGS.unparse_flags()


@pytest.mark.parametrize("name,flag", _output_flags(("output", "path")))
def test_an_empty_path_is_as_if_not_given_or_one_line(name, flag):
    # It used to mean the current directory, and to be refused later in other words (e.g. "--workdir
    # ... lies inside --init"). A path whose default is None: as if not given (--data_dir=$UNSET);
    # one with another default (--init none): refused, as the default would be a silent guess.
    given = _config_or_error(name, [f"--{flag}="])
    defaults = {settings.flag_name(f): f.default for c in vars(_driver(name)).values()
                if dataclasses.is_dataclass(c) and isinstance(c, type) for f in dataclasses.fields(c)}
    if defaults[flag] is not None:
        assert given == f"UserError: --{flag} is empty: give a path"
    else:
        assert given == _config_or_error(name, [])


@pytest.mark.parametrize("name,flag", _output_flags())
def test_output_onto_a_dangling_symlink_is_refused(name, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.symlink(str(tmp_path / "missing" / "target"), "link")
    code = _driver(name).main([name, f"--{flag}=link"])
    _assert_one_error(code, capsys.readouterr().err, "link is a dangling symlink")
    assert os.listdir(tmp_path) == ["link"]


# ---------------------------------------------------------------- evaluate.py (EvalConfig), in-process

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
def test_evaluate_flags_are_checked_while_parsing(args, flag, capsys):
    from psp_tf.cli import evaluate

    code = evaluate.main(["evaluate.py", f"--weights={NOWHERE}", *args])
    _assert_one_error(code, capsys.readouterr().err, flag)


def test_evaluate_accepts_its_defaults_and_a_good_combination():
    from psp_tf.cli import driver, evaluate
    from psp_tf.evaluation.config import EvalConfig

    evaluate.FLAGS.unparse_flags()
    evaluate.FLAGS(["evaluate.py", "--weights=w", "--expect=paper", "--tolerance=0.5", "--strategy=tpu",
                    "--tpu=n", "--output_dir=o", "--overwrite", "--scales=ms"])
    config = driver.config_from_flags(EvalConfig, evaluate.FLAGS)
    assert config.tolerance == 0.5 and config.tpu == "n" and config.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert EvalConfig(weights="w").batch_size == 2 and EvalConfig(weights="w").scales == (1.0,)


def test_every_numeric_evaluate_flag_has_a_validator():
    from absl import flags
    from psp_tf.cli import evaluate

    numeric = [evaluate.FLAGS[name] for name in evaluate.FLAGS
               if isinstance(evaluate.FLAGS[name].parser, (flags.IntegerParser, flags.FloatParser))]
    assert numeric and all(f.validators for f in numeric), [f.name for f in numeric if not f.validators]


def test_eval_config_in_code_checks_the_same_rules():
    from psp_tf.evaluation.config import EvalConfig

    with pytest.raises(UserError, match="--tolerance=nan"):
        EvalConfig(weights="w", tolerance=float("nan"), expect="paper")
    with pytest.raises(UserError, match="--tpu needs --strategy tpu"):
        EvalConfig(weights="w", tpu="node")
    with pytest.raises(UserError, match="--scales='1,nan'"):
        EvalConfig(weights="w", scales="1,nan")


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


# ---------------------------------------------------------------- a bad number through the drivers
# (as real processes in tests/cli/test_errors.py)

@pytest.mark.parametrize("name,args,flag", [
    ("train", ["--workdir", "run", "--lr", "inf"], "--lr=inf"),
    ("evaluate", ["--weights", NOWHERE, "--tolerance", "nan", "--expect", "paper"], "--tolerance=nan"),
])
def test_drivers_refuse_a_bad_number_as_one_line(name, args, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _driver(name).main([name, *args])
    _assert_one_error(code, capsys.readouterr().err, flag)
    assert os.listdir(tmp_path) == []


def test_range_rules():
    from psp_tf import checks

    assert checks.POSITIVE_INT.parse("3") == 3 and checks.POSITIVE.parse("1e-3") == 1e-3
    for rule, text in [(checks.POSITIVE_INT, "0"), (checks.POSITIVE_INT, "2.5"), (checks.NON_NEGATIVE, "-1e-9"),
                       (checks.POSITIVE, "inf"), (checks.NON_NEGATIVE, "nan"), (checks.FRACTION, "1")]:
        with pytest.raises(ValueError, match=repr(text)):
            rule.parse(text)
    assert checks.FRACTION.problem(0.0) is None and checks.SEED.problem(2**32 - 1) is None
