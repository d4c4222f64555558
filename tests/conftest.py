"""Fixtures every test folder shares. Helpers that are not fixtures live in tests/support/."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Two pytest-xdist workers share two cores: one compute thread per process (TensorFlow's op pools,
# OpenBLAS under the NumPy Caffe reference), inherited by the processes tests start. With each
# process's default pools of both cores their threads contend: two PSPNet101 parity checks run at
# once took 50 s wall with one thread each against 58 s with the defaults (benchmarks are not tests;
# this only sets how the suite shares the machine, never what a test computes).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

# The test processes allocate as the tools do: freed memory stays in the heap (psp_tf.startup), so
# the full-size forwards do not page-fault every large tensor afresh.
from psp_tf import startup  # noqa: E402

startup.keep_freed_memory()

# The converted-caffemodel fixtures (session-scoped: each synthetic net is built once per run).
from support.caffe_nets import ade_file, caffe_dir, cityscapes_file, voc_file  # noqa: E402,F401


def _file_seconds(item):
    marker = item.get_closest_marker("heavy")
    return marker.args[0] if marker else 0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Heavy files first, the heaviest first (longest-processing-time-first): the two xdist workers
    take whole files in this order (--dist loadfile --no-loadscope-reorder), so the small files fill
    the end and both workers finish together. A stable sort: within a file, tests keep their order."""
    items.sort(key=lambda item: -_file_seconds(item))
