"""The values a numeric setting accepts, one rule per kind of value (`Range`).

A config field declares its rule (`psp_tf.settings.setting(rule=...)`); the drivers check it while the
flags are parsed and `check` (through `settings.check_settings`) checks a config built in code, both
with one line naming the flag.
"""

import dataclasses
import math
from typing import Optional

from psp_tf.errors import UserError

# Counts end up in int32 tensors (steps, batch sizes, image indices).
INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric flag accepts: an integer or a finite float, between optional bounds."""

    integer: bool
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False  # high itself excluded
    text: str = ""  # what the value must be, e.g. "a positive integer"

    def problem(self, value):
        """None when `value` is allowed, else the text it must satisfy ('must be ...')."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {self.text}"
        if self.integer and not float(value).is_integer():
            return f"must be {self.text}"
        if not math.isfinite(value):
            return f"must be {self.text}"
        too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        return f"must be {self.text}" if too_low or too_high else None

    def parse(self, text):
        """The value of a command-line string; ValueError naming what it must be."""
        try:
            value = int(text) if self.integer else float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{text!r} is not {self.text}") from None
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{text!r} {problem}")
        return value


POSITIVE_INT = Range(True, 1, INT32_MAX, text=f"a positive integer (at most {INT32_MAX})")
NON_NEGATIVE_INT = Range(True, 0, INT32_MAX, text=f"0 or a positive integer (at most {INT32_MAX})")
# keras.utils.set_random_seed hands the seed to numpy, which takes 0 .. 2**32 - 1.
SEED = Range(True, 0, 2**32 - 1, text="an integer in 0 .. 4294967295")
POSITIVE = Range(False, 0, low_open=True, text="a finite number > 0")
NON_NEGATIVE = Range(False, 0, text="a finite number >= 0")
FRACTION = Range(False, 0, 1, high_open=True, text="a number in [0, 1)")
# Labels are 8-bit train ids with 255 = ignore.
NUM_CLASSES = Range(True, 1, 255, text="an integer in 1 .. 255 (8-bit labels, 255 = ignore)")


def check(flag, value, rule, allow_none=False):
    """Raises UserError `--flag=value must be ...` unless `value` satisfies `rule` (None: if allowed)."""
    if value is None and allow_none:
        return
    problem = rule.problem(value)
    if problem:
        raise UserError(f"--{flag}={value!r} {problem}")
