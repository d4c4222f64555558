"""Fixtures every test folder shares. Helpers that are not fixtures live in tests/support/."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The converted-caffemodel fixtures (session-scoped: each synthetic net is built once per run).
from support.caffe_nets import ade_file, caffe_dir, cityscapes_file, voc_file  # noqa: E402,F401
