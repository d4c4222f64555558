"""Helpers the tests share (not tests themselves); the suite puts tests/ on sys.path (setup.cfg)."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
