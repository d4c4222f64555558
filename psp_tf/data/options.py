"""Each dataset reader's options: a small frozen record, parsed once from `--dataset_option key=value`.

`parse(dataset, ("num_images=8", ...))` turns a tool's repeated flag into the reader's typed record
and validates it (unknown key, no `=`, a value of the wrong kind or out of range: one UserError line
naming `--dataset_option KEY`); the record then travels to `registry.open_dataset(..., options=...)`
unchanged. Built in code, `SyntheticOptions(num_images=8)` checks the same rules.

This module is light (no TensorFlow): a config's resolution parses the options before TensorFlow
starts, so a bad option answers at once.
"""

import dataclasses
import json
import typing
from typing import Optional, Tuple, Union

from psp_tf import checks, settings
from psp_tf.errors import UserError

FLAG = "dataset_option"


def _flag(key):
    """The name a message gives an option: `--dataset_option KEY=...`."""
    return f"{FLAG} {key}"


def _option(name, default, help, **declared):
    """A `settings.setting` whose messages name `--dataset_option NAME` (the field's own name)."""
    return settings.setting(default, help, flag=_flag(name), **declared)


class _Options:
    """What every options record does: check its values' kinds and rules on construction."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value, kinds = getattr(self, field.name), set(typing.get_args(hints[field.name])) | {hints[field.name]}
            if bool in kinds and not isinstance(value, bool):
                raise UserError(f"--{_flag(field.name)}={value!r} must be true or false")
            if kinds <= {str, type(None), Optional[str]} and value is not None and not isinstance(value, str):
                raise UserError(f"--{_flag(field.name)}={value!r} must be a path or name (text)")
        settings.check_settings(self)
        self.check()

    def check(self):
        """The record's own checks across fields (UserError naming the option)."""


@dataclasses.dataclass(frozen=True)
class NoOptions(_Options):
    """A reader without options (ade20k, voc2012, tfrecord)."""


@dataclasses.dataclass(frozen=True)
class CityscapesOptions(_Options):
    coarse: bool = _option(
        "coarse", False, "read gtCoarse (splits train, train_extra, val) instead of gtFine")


@dataclasses.dataclass(frozen=True)
class VocAugOptions(_Options):
    voc_dir: Optional[str] = _option(
        "voc_dir", None, "VOC 2012 location if not under --data_dir")
    sbd_dir: Optional[str] = _option(
        "sbd_dir", None, "SBD (benchmark_RELEASE) location if not under --data_dir")


@dataclasses.dataclass(frozen=True)
class SyntheticOptions(_Options):
    num_images: Optional[int] = _option(
        "num_images", None, "split size (default 2000 train, 200 val)", rule=checks.POSITIVE_INT)
    seed: int = _option(
        "seed", 0, "dataset seed: the same seed gives the same images", rule=checks.SEED)


@dataclasses.dataclass(frozen=True)
class FolderOptions(_Options):
    num_classes: Optional[int] = _option(
        "num_classes", None, "K (required): label values are 0..K-1 or 255", rule=checks.NUM_CLASSES)
    class_names: Union[str, Tuple[str, ...], None] = _option(
        "class_names", None, "K names: comma-separated, a file with one name a line, or a JSON list")
    palette: Optional[Tuple[Tuple[int, int, int], ...]] = _option(
        "palette", None, "K RGB triples as JSON, e.g. [[0,0,0],[255,0,0]] (default: the VOC palette)")

    def check(self):
        if self.num_classes is None:
            raise UserError("folder: option num_classes (a positive integer) is required "
                            "(--dataset_option num_classes=K)")
        names = self.class_names
        if names is not None and not (isinstance(names, str) or (
                isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names))):
            raise UserError(f"--{_flag('class_names')}={names!r}: expected names separated by commas, "
                            f"a file with one name a line, or a JSON list")
        if isinstance(names, (list, tuple)):
            object.__setattr__(self, "class_names", tuple(names))
            if len(names) != self.num_classes:
                raise UserError(f"--{_flag('class_names')}: {len(names)} names given for "
                                f"num_classes={self.num_classes}")
        if self.palette is not None:
            object.__setattr__(self, "palette", _palette(self.palette, self.num_classes))


def _palette(palette, num_classes):
    """K RGB triples of 0..255 as a tuple of tuples; UserError naming the option otherwise."""
    triples = isinstance(palette, (list, tuple)) and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c) for c in palette)
    if not triples or len(palette) != num_classes:
        got = f"{len(palette)}" if isinstance(palette, (list, tuple)) else repr(palette)
        raise UserError(f"--{_flag('palette')}: palette: needs {num_classes} RGB triples, got {got} "
                        f"(each three integers 0..255)")
    return tuple(tuple(int(v) for v in c) for c in palette)


# Dataset name -> its options record (the registry's readers take exactly these fields).
OPTIONS = {
    "ade20k": NoOptions, "cityscapes": CityscapesOptions, "voc2012": NoOptions, "voc_aug": VocAugOptions,
    "folder": FolderOptions, "synthetic": SyntheticOptions, "tfrecord": NoOptions,
}


def options_class(dataset):
    """The options record of `dataset` (UserError for an unknown name)."""
    if dataset not in OPTIONS:
        raise UserError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(sorted(OPTIONS))}")
    return OPTIONS[dataset]


def names(dataset):
    """The option names `dataset` accepts."""
    return tuple(f.name for f in dataclasses.fields(options_class(dataset)))


def build(dataset, **values):
    """The options record of `dataset` from typed values (code); unknown keys are one UserError line."""
    cls = options_class(dataset)
    valid = names(dataset)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UserError(f"dataset {dataset}: unknown option(s) {', '.join(unknown)}; valid options: "
                        f"{', '.join(valid) or 'none'}")
    return cls(**values)


def parse(dataset, pairs):
    """The options record of `dataset` from `("key=value", ...)` (a repeated --dataset_option flag).

    Values are read by the field's type: numbers and booleans (true/false) and JSON lists as JSON,
    text as given.

    Raises:
      UserError: an item without '=', an unknown key, a repeated key, or a value the option refuses.
    """
    cls = options_class(dataset)
    hints = typing.get_type_hints(cls)
    values = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise UserError(f"--{FLAG} {pair!r} must be key=value")
        key, text = (part.strip() for part in pair.split("=", 1))
        if key in values:
            raise UserError(f"--{_flag(key)} is given twice")
        values[key] = _value(text, hints.get(key))
    return build(dataset, **values)


def _value(text, annotation):
    """The text of one option as its field's type expects it (left as text where it does not parse:
    the record's check then names the option and what it must be)."""
    kinds = set(typing.get_args(annotation)) | {annotation}
    if str in kinds and not text.startswith("["):
        return text
    if bool in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if int in kinds and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_strings(record):
    """The `key=value` texts that `parse` reads back as `record` (fields left at their defaults omitted)."""
    pairs = []
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if value == field.default:
            continue
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (int, str)):
            text = str(value)
        else:
            text = json.dumps(value)
        pairs.append(f"{field.name}={text}")
    return tuple(pairs)
