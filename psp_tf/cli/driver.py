"""What every driver shares: flags derived from a config dataclass, and one way to run a tool.

A driver declares nothing but its docstring, its config class and the library call:

    FLAGS = flags.FlagValues()
    driver.define_flags(EvalConfig, FLAGS)

    def main(argv=None):
        return driver.run(__doc__, EvalConfig, FLAGS, _evaluate, argv)

`run` prints the help (exit 0) before TensorFlow is imported, turns a bad flag or value into one
`error:` line (exit 2), starts TensorFlow quietly, builds the config (its own checks raise UserError)
and calls the body; UserError and out-of-memory from the body are one `error:` line too.

Each driver owns a private `FlagValues`, so tests can import and run several drivers in one process.
"""

import dataclasses
import sys
import typing

from absl import flags

from psp_tf import settings
from psp_tf.errors import UserError, out_of_memory_message
from psp_tf.outputs import dangling_symlink
from psp_tf.startup import import_tensorflow_quietly

HELP_FLAGS = ("-h", "--help", "-help", "--helpfull", "-?")


def _flag_kind(annotation):
    """(kind, element type) of a field's annotation: Optional[X] is X; Tuple[str, ...] is repeated."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        return _flag_kind(args[0])
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] is str:
        return "multi", str
    if annotation in (bool, int, float, str):
        return annotation.__name__, annotation
    return "parsed", None


def define_flags(config_cls, flag_values, exclude=()):
    """Defines one absl flag per field of `config_cls` (but `exclude`), from its `setting()` declaration.

    Numbers get a validator from the field's rule and output paths one that refuses a dangling
    symlink, so a bad value is refused while the flags are parsed, naming the flag.
    """
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in exclude:
            continue
        spec = settings.declared(field)
        name = settings.flag_name(field)
        default = None if field.default is dataclasses.MISSING else field.default
        kind, _ = _flag_kind(hints[field.name])
        if spec.parse is not None:
            kind = "parsed"
        help_text = spec.help or field.name
        if spec.choices is not None and kind != "multi":
            flags.DEFINE_enum(name, default, [str(c) for c in spec.choices], help_text, flag_values=flag_values)
        elif kind == "bool":
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind == "int":
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind == "float":
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        elif kind == "multi":
            flags.DEFINE_multi_string(name, list(default or ()), help_text, flag_values=flag_values)
        else:  # str, or text a `parse` turns into the field's value
            text = default if isinstance(default, str) or default is None else _as_text(default)
            flags.DEFINE_string(name, text, help_text, flag_values=flag_values)
        _register_checks(name, spec, flag_values)


def _as_text(value):
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _register_checks(name, spec, flag_values):
    def valid(value):
        if value is None:
            return True
        problem = spec.rule.problem(value) if spec.rule is not None else None
        if problem is None and spec.output:
            problem = dangling_symlink(value)
        if problem:
            raise flags.ValidationError(problem)
        return True

    if spec.rule is not None or spec.output:
        flags.register_validator(name, valid, flag_values=flag_values)


def config_from_flags(config_cls, flag_values, exclude=(), **fixed):
    """The `config_cls` the parsed flags describe; `fixed` supplies the fields a driver sets itself.

    Raises:
      UserError: a `parse`d flag's text is not valid, or the config's own checks fail.
    """
    values = dict(fixed)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in exclude or field.name in fixed:
            continue
        spec = settings.declared(field)
        name = settings.flag_name(field)
        value = flag_values[name].value
        kind, _ = _flag_kind(hints[field.name])
        if kind == "multi":
            value = tuple(value or ())
        elif spec.parse is not None and value is not None and flag_values[name].present:
            try:
                value = spec.parse(value)
            except ValueError as e:
                raise UserError(f"--{name}={value!r}: {e}") from None
        elif spec.parse is not None and value is not None:
            value = field.default  # the declared default, not its text
        values[field.name] = value
    return config_cls(**values)


def help_text(doc, flag_values):
    """The tool's docstring as written, then each flag with its default and choices."""
    lines = [doc.strip("\n"), "", "flags:"]
    for flag in _all(flag_values):
        default = flag.default if not isinstance(flag.default, list) else ",".join(flag.default) or "none"
        choices = getattr(flag.parser, "enum_values", None)
        kind = f"<{'|'.join(choices)}>" if choices else flag.parser.flag_type()
        described = flag.help.split(">: ", 1)[1] if choices and flag.help.startswith("<") else flag.help
        described = described.replace(";\n    repeat this option to specify a list of values", " (repeatable)")
        lines.append(f"  --{flag.name}={kind}  (default: {default})")
        lines.append(f"      {described}")
    return "\n".join(lines) + "\n"


def _all(flag_values):
    """The driver's flags in the order they were defined (each once, though absl also lists short names)."""
    seen = {}
    for name in flag_values:
        flag = flag_values[name]
        seen.setdefault(flag.name, flag)
    return list(seen.values())


def run(doc, config_cls, flag_values, body, argv=None, positional=False, fixed=None):
    """Runs one tool; returns its exit status (0 done, 2 bad input, or what `body` returns).

    Args:
      doc: the driver's docstring (printed verbatim by --help).
      config_cls: the tool's config dataclass; its flags were defined by `define_flags`.
      flag_values: the driver's FlagValues.
      body: callable(config) (or (config, arguments) when `positional`) doing the work; it may
        return an exit status.
      argv: the command line, program name first (default: sys.argv).
      positional: whether arguments other than flags are accepted (handed to `body`).
      fixed: callable(arguments) -> dict of config fields the driver derives itself, or None.
    """
    argv = list(sys.argv if argv is None else argv)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        sys.stdout.write(help_text(doc, flag_values))
        return 0
    flag_values.unparse_flags()
    try:
        arguments = flag_values(argv)[1:]
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if arguments and not positional:
        print(f"error: unexpected argument {arguments[0]!r} (flags are --name=value)", file=sys.stderr)
        return 2
    if not flags.FLAGS.is_parsed():  # absl logging reads the global flags; ours are the driver's own
        flags.FLAGS.mark_as_parsed()
    import_tensorflow_quietly()
    try:
        extra = fixed(arguments) if fixed is not None else {}
        config = config_from_flags(config_cls, flag_values, **extra)
        status = body(config, arguments) if positional else body(config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 (only out-of-memory is turned into a line; the rest re-raised)
        message = out_of_memory_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return int(status or 0)
