"""The shared output helpers: all or nothing, with ordinary permissions."""

import os

import pytest

from psp_tf.errors import UserError
from psp_tf.outputs import atomic_directory, atomic_file


def test_atomic_directory_all_or_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            open(os.path.join(tmp, "half"), "w").write("x")
            raise RuntimeError("crash mid-write")
    assert os.listdir(tmp_path) == []
    with atomic_directory(target) as tmp:
        open(os.path.join(tmp, "done"), "w").write("x")
    assert os.listdir(target) == ["done"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        with atomic_directory(target):
            pass


def test_atomic_directory_overwrites_a_directory_or_a_file(tmp_path):
    for existing in ("dir", "file"):
        target = tmp_path / existing
        if existing == "dir":
            os.makedirs(target / "old")
        else:
            target.write_text("old")
        with atomic_directory(target, overwrite=True) as tmp:
            open(os.path.join(tmp, "new"), "w").write("x")
        assert os.listdir(target) == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"]


def test_atomic_file(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(ValueError):
        with atomic_file(target, "w") as f:
            f.write("half")
            raise ValueError
    assert os.listdir(tmp_path) == []
    with atomic_file(target, "w") as f:
        f.write("whole")
    assert target.read_text() == "whole"
