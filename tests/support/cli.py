"""One interpreter that runs command-line tools one after another, as separate commands would.

TensorFlow's import alone costs ~7 s a process, so where a test's claim is about what several runs
print (exit status, stderr), one subprocess runs them in turn: each checkout script or module as
`__main__` (runpy, as `python train.py` and `python -m psp_tf.cli.predict` run them), with a marker
line on stderr before each so that each run's stderr is checked on its own. The first run starts
TensorFlow in a fresh process, as a user's command does.
"""

import json
import os
import subprocess
import sys

from support import REPO

MARKER = "@@@ run "

_IN_TURN = """
import json, runpy, sys
codes = []
for run in json.loads(sys.argv[1]):
    print(%r + str(len(codes)), file=sys.stderr, flush=True)
    module = run[0] == "-m"
    sys.argv = run[1:] if module else run
    try:
        if module:
            runpy.run_module(run[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(run[0], run_name="__main__")
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code)
    sys.stderr.flush()
print(json.dumps(codes))
""" % MARKER


class Runs:
    """What the runs left: `codes[i]`, `stderr[i]` (the i-th run's stderr) and the whole process's."""

    def __init__(self, done, count):
        self.process = done
        if done.returncode != 0:
            raise AssertionError(f"the runner failed ({done.returncode}): {done.stderr[-3000:]}")
        self.codes = json.loads(done.stdout.splitlines()[-1])
        self.stdout = done.stdout
        parts = done.stderr.split(MARKER)
        assert parts[0] == "" and len(parts) == count + 1, done.stderr[-3000:]
        self.stderr = [part.split("\n", 1)[1] if "\n" in part else "" for part in parts[1:]]


def run_in_turn(runs, env=None, cwd=None, timeout=900):
    """Runs `runs` (each `[script, *args]` or `["-m", module, *args]`) in one fresh interpreter.

    `env` replaces the environment (default: this one with PYTHONPATH = the checkout)."""
    env = {**os.environ, "PYTHONPATH": REPO} if env is None else env
    done = subprocess.run([sys.executable, "-c", _IN_TURN, json.dumps([list(map(str, r)) for r in runs])],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return Runs(done, len(runs))
