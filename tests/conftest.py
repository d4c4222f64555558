"""Fixtures every test folder shares. Helpers that are not fixtures live in tests/support/."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
