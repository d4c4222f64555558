"""Typed settings: a config dataclass field that carries its own help text and the values it accepts.

Every tool's configuration is a frozen dataclass whose fields are declared with `setting(...)`. The
declaration is the one place a setting is described: the command-line drivers (psp_tf/cli) derive
their flags from it, and `check_settings` validates a config built in code (tests, notebooks) with
the same rules and the same one-line messages, so no setting is declared twice.

This module is light (no TensorFlow): a driver reads the declarations before TensorFlow starts, so
`--help` and a bad flag answer at once.
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence

from psp_tf import checks
from psp_tf.errors import UserError

_KEY = "psp_tf.setting"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a field declares about itself (stored in the dataclass field's metadata)."""

    help: str
    choices: Optional[Sequence[str]] = None  # the accepted strings (a flag then lists them)
    rule: Optional[checks.Range] = None  # the accepted numbers
    flag: Optional[str] = None  # the flag's name when it is not the field's (e.g. repeated: singular)
    parse: Optional[Callable[[str], Any]] = None  # text -> value, for types a flag cannot hold
    output: bool = False  # a path the tool writes: a dangling symlink there is refused
    # A local path (or gs://) the tool reads; outputs are paths too. A driver makes one with a '..'
    # component absolute as the OS reads it (psp_tf.outputs.absolute): TensorFlow's file functions
    # collapse 'link/..' as text and would read, or be checked, somewhere else.
    path: bool = False


def setting(default=dataclasses.MISSING, help="", *, default_factory=dataclasses.MISSING, **declared):
    """A dataclass field with its description; `declared` are `Setting`'s other fields."""
    metadata = {_KEY: Setting(help=help, **declared)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def declared(field: dataclasses.Field) -> Setting:
    """The field's `Setting` (fields declared without `setting()` get one with no help)."""
    return field.metadata.get(_KEY) or Setting(help="")


def flag_name(field: dataclasses.Field) -> str:
    return declared(field).flag or field.name


def check_settings(config):
    """Raises UserError naming the flag when a field breaks its declared rule or choices.

    None is allowed wherever it is the field's default (None then means "decided later"); each
    element of a tuple value is checked.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        spec = declared(field)
        if value is None and field.default is None:
            continue
        # A tuple (a repeated flag, a parsed list such as scales): each element obeys the declaration.
        for one in value if isinstance(value, (tuple, list)) else (value,):
            if spec.rule is not None:
                checks.check(flag_name(field), one, spec.rule)
            if spec.choices is not None and one not in spec.choices:
                raise UserError(f"--{flag_name(field)}={one!r} must be one of {', '.join(map(str, spec.choices))}")
