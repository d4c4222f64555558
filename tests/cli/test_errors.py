"""Every command-line tool answers a bad input with exactly one line on stderr and exit status 2.

In-process through each driver's main (stderr captured at the file descriptor, so a line TensorFlow's
C++ side writes is caught too); the two scripts a checkout runs, train.py and evaluate.py, also as
real processes (the one place TensorFlow's start-up noise would show).
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


@pytest.mark.parametrize("script,args,start", [
    ("train.py", ["--steps", "0"], "error: --steps=0 must be a positive integer"),
    ("evaluate.py", [], "error: --weights is required"),  # after TensorFlow started: its start is quiet
])
def test_checkout_scripts_as_processes(script, args, start, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    done = subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    _assert_one_error_line(done.returncode, done.stderr, start)
    assert os.listdir(tmp_path) == []
