"""Range checks of every numeric flag and output path, shared by all command-line tools.

One rule per kind of value (`Range`), applied three ways so that every tool refuses a bad value before
it starts, with one line naming the flag: `arg_type` for argparse's `type=` (the `python -m` tools),
`absl_range` / `absl_requires` for absl validators (evaluate.py), and `check` for library records
validated up front (psp_tf.training.config.TrainConfig, which train.py's flags mirror).
"""

import argparse
import dataclasses
import math
from typing import Optional

from psp_tf.errors import UserError
from psp_tf.outputs import dangling_symlink

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


def arg_type(rule):
    """An argparse `type=` that parses and range-checks (argparse then prints `argument --flag: ...`)."""

    def parse(text):
        try:
            return rule.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "number"
    return parse


def output_path(text):
    """An argparse `type=` for an output path: refuses a dangling symlink (psp_tf.outputs.dangling_symlink)."""
    problem = dangling_symlink(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def absl_range(name, rule, flag_values=None):
    """Registers an absl validator: flag `name` (None = unset, allowed) must satisfy `rule`."""
    from absl import flags

    def valid(value):
        problem = None if value is None else rule.problem(value)
        if problem:
            raise flags.ValidationError(problem)
        return True

    flags.register_validator(name, valid, flag_values=flag_values or flags.FLAGS)


def absl_output_path(name, flag_values=None):
    """Registers an absl validator: flag `name` (a path, None = unset) passes `output_path`."""
    from absl import flags

    def valid(value):
        try:
            value is None or output_path(value)
        except argparse.ArgumentTypeError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator(name, valid, flag_values=flag_values or flags.FLAGS)


def absl_requires(name, needs, satisfied, depends_on, flag_values=None):
    """Registers an absl validator: when flag `name` is given, `satisfied(values)` must hold.

    Args:
      name: the flag that only makes sense with another setting.
      needs: what it needs, for the message ("--strategy tpu").
      satisfied: callable(dict of the values of `name` and `depends_on`) -> bool.
      depends_on: the other flags `satisfied` reads.
    """
    from absl import flags

    flag_values = flag_values or flags.FLAGS

    def valid(values):
        if flag_values[name].present and not satisfied(values):
            raise flags.ValidationError(f"--{name} needs {needs}")
        return True

    flags.register_multi_flags_validator([name, *depends_on], valid, flag_values=flag_values)


def require(parser, args, name, needs, satisfied):
    """argparse: `parser.error('--name needs ...')` when --name was given but `satisfied(args)` fails.

    A flag counts as given when it differs from its default (the argparse tools default such flags
    to None, 0 or False).
    """
    if getattr(args, name) != parser.get_default(name) and not satisfied(args):
        parser.error(f"--{name} needs {needs}")
