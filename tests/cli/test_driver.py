"""psp_tf.cli.driver: flags derived from a config dataclass (every field kind), --help, and one
`error:` line with exit status 2 for every bad command line."""

import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys
from typing import Optional, Tuple

import pytest
from absl import flags

from psp_tf import checks, progress, settings
from psp_tf.cli import driver
from psp_tf.errors import UserError

DOC = """Does an example job.

    example --required=r --count 4     # an example command line, kept as written
    example --tag a --tag b

The second paragraph, after a blank line.
"""


def _size(text):
    h, _, w = text.partition("x")
    if not (h.isdigit() and w.isdigit()):
        raise ValueError("must be HxW, e.g. 3x4")
    return int(h), int(w)


@dataclasses.dataclass(frozen=True)
class Example:
    required: str = settings.setting(help="a field without a default: a required flag")
    switch: bool = settings.setting(False, "a bool")
    count: int = settings.setting(3, "an int", rule=checks.POSITIVE_INT)
    rate: float = settings.setting(0.5, "a float", rule=checks.POSITIVE)
    name: str = settings.setting("x", "a str")
    limit: Optional[int] = settings.setting(None, "an Optional int", rule=checks.NON_NEGATIVE_INT)
    ratio: float | None = settings.setting(None, "a `float | None`", rule=checks.FRACTION)
    tags: Tuple[str, ...] = settings.setting((), "a repeated str", flag="tag")
    size: Optional[Tuple[int, int]] = settings.setting(None, "parsed: HxW", parse=_size)
    mode: str = settings.setting("fast", "a choice", choices=("fast", "exact"))
    level: int = settings.setting(1, "a numeric choice", choices=(1, 2, 4))
    kinds: Tuple[str, ...] = settings.setting(("a",), "repeated choices", flag="kind", choices=("a", "b"))
    output: Optional[str] = settings.setting(None, "an output path", output=True)

    def __post_init__(self):
        settings.check_settings(self)
        if self.switch and self.limit is None:
            raise UserError("--switch needs --limit")


FLAGS = flags.FlagValues()
driver.define_flags(Example, FLAGS)


def main(argv, body=None, **kwargs):
    return driver.run(DOC, Example, FLAGS, body or (lambda config: None), ["example", *argv], **kwargs)


def configured(argv):
    seen = []
    assert main(argv, seen.append) == 0
    return seen[0]


def test_defaults_come_from_the_dataclass():
    assert configured(["--required=r"]) == Example(required="r")


def test_every_field_kind_from_its_flag():
    config = configured(["--required=r", "--switch", "--count=7", "--rate", "2.5", "--name=y", "--limit=0",
                         "--ratio=0.25", "--tag=a", "--tag=b c", "--size=3x4", "--mode=exact", "--level=4",
                         "--kind=b", "--kind=a", "--output=out"])
    assert config == Example(required="r", switch=True, count=7, rate=2.5, name="y", limit=0, ratio=0.25,
                             tags=("a", "b c"), size=(3, 4), mode="exact", level=4, kinds=("b", "a"), output="out")
    assert type(config.level) is int  # the declared choice, not its text
    assert configured(["--required=r", "--noswitch", "--limit=1"]).switch is False


def test_flags_reparsed_on_each_run():
    """A driver's FlagValues serves several runs in one process (tests): no value leaks into the next."""
    assert configured(["--required=r", "--count=9", "--tag=a"]).count == 9
    assert configured(["--required=r"]) == Example(required="r")


@pytest.mark.parametrize("argv, names", [
    (["--count=0"], "error: --count=0 must be a positive integer"),  # as the config's own check says it
    (["--count=abc"], "--count=abc is not an integer"),
    (["--rate=x"], "--rate=x is not a number"),
    (["--count=99999999999"], "--count"),
    (["--rate=nan"], "--rate"),
    (["--rate=-1"], "--rate"),
    (["--limit=-1"], "--limit"),
    (["--ratio=1"], "--ratio"),
    (["--size=3x"], "--size"),
    (["--mode=slow"], "--mode"),
    (["--level=3"], "--level"),
    (["--kind=c"], "error: --kind=c must be one of a, b\n"),
    (["--switch=maybe"], "--switch=maybe is not true or false"),
    (["--unknown=1"], "unknown"),
    (["--switch"], "--switch needs --limit"),  # the config's own contradiction check
    (["extra"], "'extra'"),  # a positional argument where the tool takes none
])
def test_bad_command_line_is_one_error_line(argv, names, capsys):
    status = main(["--required=r", *argv])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and names in err


def test_an_unreadable_flagfile_is_one_line_without_absls_prefix(capsys):
    assert main(["--required=r", "--flagfile=/nonexistent/flags"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unable to open flagfile") and err.count("\n") == 1 and "ERROR::" not in err


def test_missing_required_flag(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == "error: --required is required\n"
    assert main(["--help"]) == 0 and "--required=string  (required)" in capsys.readouterr().out


def test_dangling_symlink_output_refused(tmp_path, capsys):
    link = tmp_path / "out"
    os.symlink(tmp_path / "nowhere", link)
    assert main(["--required=r", f"--output={link}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output" in err and str(link) in err


def test_help_prints_the_docstring_verbatim_and_the_choices(capsys):
    assert main(["--required=r", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(DOC.strip("\n") + "\n")  # line breaks and indentation kept
    assert "--mode=<fast|exact>  (default: fast)" in out and "--level=<1|2|4>" in out
    assert "--kind=<a|b>  (default: a)" in out and "repeated choices (repeatable)" in out
    for field in dataclasses.fields(Example):
        assert f"--{settings.flag_name(field)}=" in out and settings.declared(field).help in out


@pytest.mark.parametrize("help_flag", ["-h", "--help", "--helpfull", "-?"])
def test_help_flags(help_flag, capsys):
    assert main([help_flag]) == 0 and capsys.readouterr().out.startswith("Does an example job.")


def test_after_double_dash_everything_is_an_argument():
    seen = []
    assert driver.run(DOC, Example, FLAGS, lambda config, args: seen.append(args),
                      ["example", "--required=r", "--", "-h"], positional=True) == 0
    assert seen == [["-h"]]


def test_positional_and_fixed_fields():
    seen = []
    status = driver.run(DOC, Example, FLAGS, lambda config, args: seen.append((config, args)) or 3,
                        ["example", "a", "b"], positional=True, fixed=lambda args: {"required": args[0]})
    assert status == 3 and seen == [(Example(required="a"), ["a", "b"])]


def test_library_errors_are_one_line(capsys):
    def body(config):
        raise UserError("data/x.png: not an image")

    assert main(["--required=r"], body) == 2
    assert capsys.readouterr().err == "error: data/x.png: not an image\n"

    def out_of_memory(config):
        raise MemoryError()

    assert main(["--required=r"], out_of_memory) == 2
    assert capsys.readouterr().err.startswith("error: out of memory (an allocation failed)")

    def ctrl_c(config):
        raise KeyboardInterrupt

    assert main(["--required=r"], ctrl_c) == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\n"

    def bug(config):
        raise KeyError("a bug is a traceback, not a user error")

    with pytest.raises(KeyError):
        main(["--required=r"], bug)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_error_after_a_progress_bar_starts_on_its_own_line(monkeypatch):
    """evaluate's error used to be glued to its half-drawn \\r bar."""
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)

    def body(config):
        progress.Progress(10).update(3)
        raise UserError("data/x.png: truncated")

    assert main(["--required=r"], body) == 2
    assert stderr.getvalue().splitlines()[-1] == "error: data/x.png: truncated"


def test_a_field_no_flag_can_hold_is_refused_when_defined():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        scales: Tuple[float, ...] = settings.setting((1.0,), "no parse= for a tuple of floats")

    with pytest.raises(TypeError, match="scales"):
        driver.define_flags(Bad, flags.FlagValues())


def test_check_settings_in_code():
    """A config built in code (a notebook, a test) obeys the same rules, with the same lines."""
    with pytest.raises(UserError, match=r"^--count=0 must be a positive integer"):
        Example(required="r", count=0)
    with pytest.raises(UserError, match=r"^--kind='c' must be one of a, b"):
        Example(required="r", kinds=("a", "c"))
    with pytest.raises(UserError, match=r"^--mode='slow' must be one of fast, exact"):
        Example(required="r", mode="slow")


# --help must answer before TensorFlow loads (4-19 s): checked in a fresh process, for this example
# and for every driver of the package (one process for all: each --help runs in-process there).
_HELP_WITHOUT_TENSORFLOW = r"""
import contextlib, glob, importlib, importlib.util, io, json, os, sys
spec = importlib.util.spec_from_file_location("example_driver", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
statuses = {"example": example.main(["--help"])}
import psp_tf.cli
for path in sorted(glob.glob(os.path.join(os.path.dirname(psp_tf.cli.__file__), "*.py"))):
    name = os.path.basename(path)[:-3]
    if name not in ("__init__", "driver"):
        with contextlib.redirect_stdout(io.StringIO()):
            statuses[name] = importlib.import_module(f"psp_tf.cli.{name}").main([name, "--help"])
print(json.dumps({"statuses": statuses, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_help_does_not_import_tensorflow():
    root = pathlib.Path(driver.__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _HELP_WITHOUT_TENSORFLOW, __file__], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result["statuses"].values()) == {0} and result["tensorflow"] is False
