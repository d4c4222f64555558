"""Never lose work, with real signals in subprocesses: SIGKILL at a random moment, SIGTERM preemption.

The trainings keep the preset's crop: a crop of 41 made an 8-step run no faster (19.0 s vs 17.7 s wall
at 137; TensorFlow's start, the tracing and the checkpoint saves dominate), and the moments the kill may
land in keep their lengths.
"""

import json
import os
import random
import signal
import time

import numpy as np
import pytest

from support.training import run_script

# Subprocess trainings.
pytestmark = [pytest.mark.slow, pytest.mark.heavy(70)]

STEPS = 8
# Two steps per call: the progress line (and the kill after it) comes at the end of a call.
ARGS = ["--steps", str(STEPS), "--batch_size", "2", "--checkpoint_every", "2", "--steps_per_execution", "2"]


def _wait_for(proc, text, timeout=240):
    """Reads proc's stdout lines until one contains `text`; returns the lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never appeared; got {lines[-5:]}")


def test_sigkill_at_a_random_moment_then_restart_ends_with_the_same_weights(tmp_path):
    rng = random.Random()
    kill_after = 2 * rng.randint(1, (STEPS - 2) // 2)  # a step line, then a random delay: may land inside a save
    workdir, out = str(tmp_path / "run"), str(tmp_path / "weights.npz")
    proc = run_script(["--workdir", workdir, "--out", out, *ARGS], wait=False)
    _wait_for(proc, f"step {kill_after}/{STEPS}")
    time.sleep(rng.uniform(0.0, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(out)
    # The restart is a fresh process; the uninterrupted reference then trains in the same process (in
    # its own work directory, from step 0), which saves a TensorFlow start-up.
    straight = str(tmp_path / "straight.npz")
    then = [["--workdir", str(tmp_path / "straight"), "--out", straight]]
    done = run_script(["--workdir", workdir, "--out", out, *ARGS, "--then", json.dumps(then)])
    assert done.returncode == 0, done.stderr[-3000:]
    restarted, uninterrupted = dict(np.load(out)), dict(np.load(straight))
    assert sorted(restarted) == sorted(uninterrupted)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(restarted[name], value,
                                      err_msg=f"{name} (killed after step {kill_after})")


def test_sigterm_saves_a_checkpoint_and_exits_then_resumes(tmp_path):
    # Three steps per call: the flag is read as a call starts, and that call ends after its first step.
    workdir = str(tmp_path / "run")
    args = ["--workdir", workdir, "--steps", "40", "--batch_size", "2", "--checkpoint_every", "100",
            "--steps_per_execution", "3"]
    proc = run_script(args, wait=False)
    _wait_for(proc, "step 3/40")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped = int(out.split("PREEMPTED ")[1].split()[0])
    assert 3 < stopped < 40 and stopped % 3 == 1, stopped
    checkpoints = os.listdir(os.path.join(workdir, "checkpoints"))
    assert f"ckpt-{stopped}.index" in checkpoints and len([c for c in checkpoints if c.endswith(".index")]) == 1
    done = run_script(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {os.path.join(workdir, 'checkpoints', f'ckpt-{stopped}')} at step {stopped}" in done.stdout
    # The first call after the resume ends on a multiple of --steps_per_execution (its progress line).
    first = int(done.stdout.split("] step ")[1].split("/")[0])
    assert stopped < first <= stopped + 3 and first % 3 == 0 and f"step {stopped}/40" not in done.stdout
