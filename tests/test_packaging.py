"""A non-editable install from a wheel (issue 13): the console scripts, the layer specs, no `convert`.

The wheel is built from this checkout and installed into a target folder (dependencies are the
environment's own: TensorFlow is not installed again); every check then runs the installed copy, from
a folder outside the checkout.
"""

import configparser
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The tools and their drivers (issue 13: one psp- prefix for all).
CONSOLE_SCRIPTS = {
    "psp-train": "psp_tf.cli.train:main",
    "psp-evaluate": "psp_tf.cli.evaluate:main",
    "psp-convert": "psp_tf.cli.convert:main",
    "psp-predict": "psp_tf.cli.predict:main",
    "psp-export": "psp_tf.cli.export:main",
    "psp-check-data": "psp_tf.cli.check_data:main",
    "psp-write-tfrecords": "psp_tf.cli.write_tfrecords:main",
    "psp-synthetic-caffemodel": "psp_tf.cli.synthetic_caffemodel:main",
}

# Not marked slow: building and installing take ~8 s and the 8 `--help` runs ~0.5 s each (TensorFlow
# is never imported), 12 s in all measured on 2 shared cores.

# What a build must not see: setuptools' build/ keeps modules deleted since, and would ship them.
_NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "runs", "converted",
                                      "workdir")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, install folder) of this checkout, built from a clean copy without build isolation
    (setuptools is the environment's: nothing is downloaded)."""
    work = tmp_path_factory.mktemp("packaging")
    source, wheels, target = work / "source", work / "wheels", work / "site"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(wheels)], check=True, cwd=work, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("psp_tf-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)], check=True, cwd=work, capture_output=True, timeout=300)
    return wheel, target


def _installed_env(target):
    """Only the installed copy on the path (not this checkout, whatever PYTHONPATH said)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_setup_cfg_declares_every_tool():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    declared = dict(tuple(part.strip() for part in line.split("=")) for line in lines)
    assert declared == CONSOLE_SCRIPTS


def test_wheel_holds_psp_tf_and_its_specs_only(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"psp_tf"}  # no top-level `convert`
    specs = sorted(p.name for p in (ROOT / "psp_tf" / "specs").glob("*.prototxt"))
    assert specs and sorted(n.split("/")[-1] for n in names if n.startswith("psp_tf/specs/")) == specs
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{script} = {target}" in text for script, target in CONSOLE_SCRIPTS.items())


def test_installed_copy_is_what_runs(installed):
    _, target = installed
    r = subprocess.run([sys.executable, "-c", "import psp_tf, importlib.util; print(psp_tf.__file__); "
                        "print(importlib.util.find_spec('convert') is None)"],
                       capture_output=True, text=True, env=_installed_env(target), cwd=target.parent, timeout=60)
    where, no_convert = r.stdout.split()
    assert pathlib.Path(where).is_relative_to(target) and no_convert == "True"


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_every_console_script_answers_help(installed, script):
    _, target = installed
    r = subprocess.run([str(target / "bin" / script), "--help"], capture_output=True, text=True,
                       env=_installed_env(target), cwd=target.parent, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() and "flags:" in r.stdout
