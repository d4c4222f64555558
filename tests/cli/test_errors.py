"""Every command-line tool answers a bad input with exactly one line on stderr and exit status 2."""

import os
import subprocess
import sys

import pytest
from support import REPO


CASES = [
    ([os.path.join(REPO, "train.py"), "--steps", "0"], "error: --steps=0 must be a positive integer"),
    ([os.path.join(REPO, "evaluate.py")], "error: --weights is required"),
    (["-m", "psp_tf.cli.predict", "--weights", "/nonexistent", "--input", "/nonexistent.png", "--output", "x"],
     "error: --input /nonexistent.png"),
    (["-m", "psp_tf.cli.export", "--weights", "/nonexistent", "--output", "x"], "error: /nonexistent is not"),
    (["-m", "psp_tf.data.check", "--dataset", "nope", "--split", "x"], "error: unknown dataset 'nope'"),
    (["-m", "psp_tf.data.write_tfrecords", "--dataset", "ade20k", "--data_dir", "/nonexistent", "--split",
      "training", "--output", "x"], "error: /nonexistent/images/training"),
    (["-m", "convert", "--caffemodel", "/nonexistent", "--output", "x"], "error: caffemodel /nonexistent"),
]


@pytest.mark.parametrize("args,start", CASES, ids=[c[0][1] if c[0][0] == "-m" else os.path.basename(c[0][0]) for c in CASES])
def test_one_error_line_and_exit_2(tmp_path, args, start):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(start), done.stderr
    assert os.listdir(tmp_path) == []
