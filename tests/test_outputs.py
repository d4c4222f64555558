"""The one output mechanism (psp_tf.outputs): all or nothing with ordinary permissions, staged writes, crash
windows, stale leftovers, names, overlap."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from psp_tf import outputs
from psp_tf.errors import UserError
from psp_tf.outputs import StagedOutput, absolute, atomic_directory, atomic_file, refuse_overlap, safe_name, sweep
from support import REPO


# A child that starts an --overwrite of `target` (old content 'old' -> new content 'new') and is
# SIGKILLed at one point of it; the kill is the real thing, only its moment is chosen by patching.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import psp_tf.outputs as e
    target, where = sys.argv[1], sys.argv[2]
    die = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    if where == "between_renames":  # the fallback (no RENAME_EXCHANGE): old moved aside, new not in yet
        e._exchange = lambda a, b: False
        rename = os.rename
        def first_rename_then_die(a, b):
            rename(a, b)
            die()
        e.os.rename = first_rename_then_die
    elif where == "after_swap":  # new in place, the old not yet deleted
        e._remove = die
    with e.atomic_directory(target, overwrite=True) as tmp:
        open(os.path.join(tmp, "new"), "w").write("new")
        if where == "while_writing":
            die()
""")


def _kill_child_during_overwrite(target, where):
    os.makedirs(target)
    (target / "old").write_text("old")
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-c", CHILD, str(target), where], env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    return sorted(os.listdir(target.parent))


def _contents(directory):
    return sorted(os.listdir(directory))


def test_killed_between_the_two_renames_the_next_run_restores_the_old_output(tmp_path):
    target = tmp_path / "out"
    left = _kill_child_during_overwrite(target, "between_renames")
    assert "out" not in left and any(".out.old-" in n for n in left)  # the crash window really hit
    # The next run of the same command finds the old output back; here it then fails itself.
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True):
            assert _contents(target) == ["old"]
            raise RuntimeError("this run fails too")
    assert _contents(tmp_path) == ["out"] and _contents(target) == ["old"]


def test_killed_after_the_swap_the_new_output_stands_and_the_old_is_swept(tmp_path):
    target = tmp_path / "out"
    left = _kill_child_during_overwrite(target, "after_swap")
    assert _contents(target) == ["new"] and len(left) == 2  # the old one, under a staging name
    assert sweep(str(tmp_path)) == [] and _contents(tmp_path) == ["out"]


def test_killed_while_writing_the_old_output_stays_and_the_leftover_goes(tmp_path):
    target = tmp_path / "out"
    left = _kill_child_during_overwrite(target, "while_writing")
    assert _contents(target) == ["old"] and len(left) == 2
    with pytest.raises(UserError, match="already exists"):  # a rerun without --overwrite
        with atomic_directory(target):
            pass
    assert _contents(tmp_path) == ["out"]  # ... still removed the dead run's staging directory


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_provably_stale_leftovers_are_removed(tmp_path):
    host = outputs._HOST
    dead, alive = _dead_pid(), os.getppid()
    names = {f".a.png.tmp-{host}-{dead}-deadbeef": "stale",
             f".a.png.tmp-{host}-{alive}-0000live": "another live process",
             f".a.png.tmp-{'0' * 8 if host != '0' * 8 else '1' * 8}-{dead}-otherhst": "another host",
             f".a.png.tmp-{host}-{dead}-lockedxx": "dead PID but locked (another PID namespace)",
             ".a.png.tmp-unrelated": "not ours"}
    for name in names:
        (tmp_path / name).write_text("x")
    lock = outputs._lock(str(tmp_path / f".a.png.tmp-{host}-{dead}-lockedxx"))
    try:
        with atomic_file(tmp_path / "a.png") as f:
            f.write(b"png")
    finally:
        os.close(lock)
    left = set(os.listdir(tmp_path))
    assert left == {"a.png"} | set(names) - {f".a.png.tmp-{host}-{dead}-deadbeef"}


def test_outputs_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.json", "w") as f:
            f.write("{}")
        with atomic_directory(tmp_path / "d") as tmp:
            open(os.path.join(tmp, "x"), "w").close()
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "f.json").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o755


def test_a_failed_overwrite_keeps_the_old_file_and_directory(tmp_path):
    (tmp_path / "f").write_text("old")
    os.makedirs(tmp_path / "d" / "old")
    for make in (lambda: atomic_file(tmp_path / "f", "w"), lambda: atomic_directory(tmp_path / "d", True)):
        with pytest.raises(KeyError):
            with make():
                raise KeyError
    assert (tmp_path / "f").read_text() == "old" and _contents(tmp_path / "d") == ["old"]
    assert _contents(tmp_path) == ["d", "f"]


def test_symlinked_output_is_written_through_a_dangling_one_refused(tmp_path):
    os.makedirs(tmp_path / "real" / "old")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with atomic_directory(tmp_path / "link", overwrite=True) as tmp:
        open(os.path.join(tmp, "new"), "w").close()
    assert os.path.islink(tmp_path / "link") and _contents(tmp_path / "real") == ["new"]
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(UserError, match="--output .*dangling is a dangling symlink"):
        with atomic_directory(tmp_path / "dangling", overwrite=True, flag="--output"):
            pass
    assert not os.path.exists(tmp_path / "nowhere")


def test_atomic_file_without_overwrite_refuses_an_existing_file(tmp_path):
    (tmp_path / "f").write_text("old")
    with pytest.raises(UserError, match="--out .*f already exists"):
        StagedOutput(tmp_path / "f", overwrite=False, flag="--out")
    assert _contents(tmp_path) == ["f"]


@pytest.mark.parametrize("name", ["../../../X", "/tmp/X", "..", ".", "", "a/b", "a\\b", ".hidden", "a\0b"])
def test_safe_name_refuses_paths(name):
    with pytest.raises(UserError, match="train.json example 3: .* not a plain file name"):
        safe_name(name, "train.json example 3")


def test_safe_name_keeps_plain_names():
    for name in ("ADE_val_00000001", "frankfurt_000000_000294_leftImg8bit", "a b.c", "été"):
        assert safe_name(name, "x") == name


def test_refuse_overlap_is_contains_inside_and_through_symlinks(tmp_path):
    src = tmp_path / "k" / "src"
    os.makedirs(src)
    (src / "model.caffemodel").write_text("x")
    os.symlink(src, tmp_path / "alias")
    cases = [(str(src), "is"), (str(tmp_path / "k"), "contains"), (str(src / "out"), "lies inside"),
             (str(tmp_path / "alias"), "is"), (str(tmp_path / "alias" / "new"), "lies inside")]
    for output, relation in cases:
        with pytest.raises(UserError, match=f"--output .* {relation} --input "):
            refuse_overlap([("--output", output)], [("--input", str(src))])
    with pytest.raises(UserError, match="--output .* contains --caffemodel"):
        refuse_overlap([("--output", str(src))], [("--caffemodel", str(src / "model.caffemodel"))])
    with pytest.raises(UserError, match="--output .* contains --savedmodel"):
        refuse_overlap([("--output", str(tmp_path / "o")), ("--savedmodel", str(tmp_path / "o" / "s"))])
    refuse_overlap([("--output", str(tmp_path / "k" / "srcx")), ("--savedmodel", None)],
                   [("--input", str(src)), ("--weights", None)])  # a shared name prefix is no overlap


def test_a_dotdot_after_a_symlink_means_what_the_os_reads(tmp_path, monkeypatch):
    # q/L -> ../p/wts, so from q, L/../wts is p/wts (the OS goes up from the link's target), while
    # collapsing the text gives q/wts: the weights could be checked as apart from, and replaced by,
    # an output ../p/wts.
    (tmp_path / "p" / "wts").mkdir(parents=True)
    (tmp_path / "q").mkdir()
    os.symlink("../p/wts", tmp_path / "q" / "L")
    monkeypatch.chdir(tmp_path / "q")
    with pytest.raises(UserError, match="--output ../p/wts is --weights L/../wts"):
        refuse_overlap([("--output", "../p/wts")], [("--weights", "L/../wts")])
    assert absolute("L/../wts") == str(tmp_path / "p" / "wts")
    assert absolute("L/../new/") == str(tmp_path / "p" / "new")  # the last component need not exist
    assert absolute("L/..") == str(tmp_path / "p") and absolute("L") == str(tmp_path / "q" / "L")
    with atomic_file("L/../out.txt", "w") as f:  # written where the OS puts it
        f.write("x")
    assert (tmp_path / "p" / "out.txt").read_text() == "x" and not (tmp_path / "q" / "out.txt").exists()


def test_a_write_the_file_system_refuses_is_one_error_naming_the_output(tmp_path):
    import resource

    # A real EFBIG: the file-size limit (Python ignores SIGXFSZ, so the write fails instead of killing).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(UserError, match=f"^cannot write {tmp_path}/big.bin: File too large$"):
            with atomic_file(tmp_path / "big.bin") as f:
                f.write(b"x" * 4096)
                f.flush()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert os.listdir(tmp_path) == []  # the staging file went with it
    with pytest.raises(UserError, match="^cannot write .*/d: No space left on device$"):
        with atomic_directory(tmp_path / "d"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    import tensorflow as tf

    with pytest.raises(UserError, match="^cannot write .*/saved: Disk quota exceeded$"):  # TensorFlow's words
        with atomic_directory(tmp_path / "saved"):
            raise tf.errors.UnknownError(None, None, "saved/variables/variables.data: Disk quota exceeded")
    with pytest.raises(OSError, match="Permission denied"):  # not a lack of room: kept as it is
        with atomic_file(tmp_path / "e.bin"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    assert os.listdir(tmp_path) == []


def test_a_file_output_never_replaces_a_directory(tmp_path):
    os.makedirs(tmp_path / "a.png" / "keep")
    with pytest.raises(UserError, match="a.png: it is a directory"):
        with atomic_file(tmp_path / "a.png") as f:
            f.write(b"png")
    assert _contents(tmp_path) == ["a.png"] and _contents(tmp_path / "a.png") == ["keep"]


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


@pytest.mark.parametrize("fallback", [False, True], ids=["renameat2", "no_renameat2"])
@pytest.mark.parametrize("kind", ["directory", "file"])
def test_an_output_that_appears_during_a_run_without_overwrite_is_kept(tmp_path, monkeypatch, kind, fallback):
    # Another run (or the user) makes the output while this run writes: the check at the start saw
    # nothing, so the commit must not replace it (a swap would delete the other's work).
    if fallback:
        monkeypatch.setattr(outputs, "_renameat2", lambda a, b, flag: False)
    target = tmp_path / "out"
    stage = atomic_directory(target, flag="--output_dir") if kind == "directory" else atomic_file(
        target, "w", overwrite=False, flag="--output")
    with pytest.raises(UserError, match=f"{target} appeared while this run wrote it .*it is kept"):
        with stage as staged:
            if kind == "directory":
                os.makedirs(target)
                (target / "keep.txt").write_text("mine")
                open(os.path.join(staged, "results.json"), "w").write("{}")
            else:
                target.write_text("mine")
                staged.write("new")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing staged is left beside it
    assert (target / "keep.txt" if kind == "directory" else target).read_text() == "mine"
    # With --overwrite the run's output replaces whatever is there, as before.
    with (atomic_directory(target, overwrite=True) if kind == "directory"
          else atomic_file(target, "w", overwrite=True)) as staged:
        if kind == "directory":
            open(os.path.join(staged, "results.json"), "w").write("{}")
        else:
            staged.write("new")
    assert (os.listdir(target) == ["results.json"]) if kind == "directory" else target.read_text() == "new"
