"""Every command-line tool answers a bad input with exactly one line on stderr and exit status 2.

In-process through each driver's main (stderr captured at the file descriptor, so a line TensorFlow's
C++ side writes is caught too); train.py also as a real process, refused before TensorFlow loads.
evaluate.py's real process, refused after TensorFlow started (the one place TensorFlow's start-up noise
would show), is the first of the scripts test_read_errors.py::test_train_and_evaluate_runs_print_no_library_noise
runs in one interpreter.
"""

import importlib
import os
import subprocess
import sys

import pytest
from support import REPO

# (driver module, arguments, how the error line starts)
CASES = [
    ("train", ["--steps", "0"], "error: --steps=0 must be a positive integer"),
    ("evaluate", [], "error: --weights is required"),
    ("predict", ["--weights", "/nonexistent", "--input", "/nonexistent.png", "--output", "x"],
     "error: --input /nonexistent.png"),
    ("export", ["--weights", "/nonexistent", "--output", "x"], "error: /nonexistent is not"),
    ("check_data", ["--dataset", "nope", "--split", "x"], "error: --dataset=nope must be one of "),
    ("write_tfrecords", ["--dataset", "ade20k", "--data_dir", "/nonexistent", "--split", "training", "--output", "x"],
     "error: /nonexistent/images/training"),
    ("convert", ["--caffemodel", "/nonexistent", "--output", "x"], "error: caffemodel /nonexistent"),
]


def _assert_one_error_line(status, stderr, start):
    assert status == 2
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith(start), stderr


@pytest.mark.parametrize("tool,args,start", CASES, ids=[c[0] for c in CASES])
def test_one_error_line_and_exit_2(tool, args, start, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    status = importlib.import_module(f"psp_tf.cli.{tool}").main([tool, *args])
    out, err = capfd.readouterr()
    _assert_one_error_line(status, err, start)
    assert os.listdir(tmp_path) == []


# A path of another encoding's bytes reaches Python as lone surrogates (os.fsdecode); TensorFlow's file
# functions cannot take it, so every path flag refuses it before any work.
NOT_UTF8 = "out\udcff"
BAD_PATHS = [("convert", ["--caffemodel", "a.caffemodel", "--output", NOT_UTF8], "--output"),
             ("export", ["--weights", "w", "--output", NOT_UTF8], "--output"),
             ("evaluate", ["--weights", "w", "--output_dir", NOT_UTF8], "--output_dir"),
             ("train", ["--workdir", NOT_UTF8], "--workdir"),
             ("predict", ["--weights", NOT_UTF8, "--input", "x.png", "--output", "o"], "--weights")]


@pytest.mark.parametrize("tool,args,flag", BAD_PATHS, ids=[c[0] for c in BAD_PATHS])
def test_a_path_that_is_not_utf8_is_one_error_line(tool, args, flag, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    status = importlib.import_module(f"psp_tf.cli.{tool}").main([tool, *args])
    _, err = capfd.readouterr()
    _assert_one_error_line(status, err, f"error: --{flag[2:]}=b'out\\xff' is not valid UTF-8")
    assert os.listdir(tmp_path) == []


def test_checkout_script_as_a_process(tmp_path):
    script, args, start = "train.py", ["--steps", "0"], "error: --steps=0 must be a positive integer"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    done = subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    _assert_one_error_line(done.returncode, done.stderr, start)
    assert os.listdir(tmp_path) == []
