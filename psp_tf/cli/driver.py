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
import re
import sys
import types
import typing

from absl import flags

from psp_tf import progress, settings
from psp_tf.errors import UserError, out_of_memory_message
from psp_tf.outputs import absolute, dangling_symlink, is_utf8_name
from psp_tf.startup import import_tensorflow_quietly

HELP_FLAGS = ("-h", "--help", "-help", "--helpfull", "--helpshort", "-?")


def _flag_kind(annotation):
    """The kind of flag a field's annotation makes: bool, int, float, str, multi (Tuple[str, ...],
    repeated) or parsed (any other type: its `setting(parse=...)` turns the text into a value).
    Optional[X] and `X | None` are X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_kind(args[0])
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] is str:
        return "multi"
    if annotation in (bool, int, float, str):
        return annotation.__name__
    return "parsed"


def _field_default(field):
    """The field's default value (a `default_factory`'s product), or None when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _required(field):
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _kind(field, hints, spec):
    kind = "parsed" if spec.parse is not None else _flag_kind(hints[field.name])
    if kind == "parsed" and spec.parse is None:
        raise TypeError(f"{field.name}: a {hints[field.name]} field needs setting(parse=...) to be a flag")
    return kind


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
        default = _field_default(field)
        kind = _kind(field, hints, spec)
        help_text = spec.help or field.name
        choices = None if spec.choices is None else [str(c) for c in spec.choices]
        if choices is not None and kind == "multi":
            flags.DEFINE_multi_enum(name, list(default or ()), choices, help_text, flag_values=flag_values)
        elif choices is not None:
            text = None if default is None else str(default)
            flags.DEFINE_enum(name, text, choices, help_text, flag_values=flag_values)
        elif kind == "bool":
            flag = flags.BooleanFlag(name, default, help_text)
            flag.parser = _BooleanParser()
            flags.DEFINE_flag(flag, flag_values)
        elif kind in ("int", "float"):
            parser = _IntegerParser() if kind == "int" else _FloatParser()
            flags.DEFINE(parser, name, default, help_text, flag_values, flags.ArgumentSerializer())
        elif kind == "multi":
            flags.DEFINE_multi_string(name, list(default or ()), help_text, flag_values=flag_values)
        else:  # str, or text a `parse` turns into the field's value
            text = default if isinstance(default, str) or default is None else _as_text(default)
            flags.DEFINE_string(name, text, help_text, flag_values=flag_values)
        _register_checks(name, spec, kind, flag_values)


def _worded(base, method, what):
    """absl's parser `base` whose `method` says `is not <what>` for a bad value (absl adds `flag --x=text: `).

    absl's own messages are Python's ("invalid literal for int() with base 10: 'x'", a tuple for a
    bool); these say what the value must be, in the words of the rest of the tools.
    """

    def reworded(self, argument):
        try:
            return getattr(base, method)(self, argument)
        except ValueError:
            raise ValueError(f"is not {what}") from None

    return type(f"Worded{base.__name__}", (base,), {method: reworded})


_IntegerParser = _worded(flags.IntegerParser, "convert", "an integer")
_FloatParser = _worded(flags.FloatParser, "convert", "a number")
_BooleanParser = _worded(flags.BooleanParser, "parse", "true or false")


def _as_text(value):
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _register_checks(name, spec, kind, flag_values):
    """A number's rule and an output path's symlink check, run as absl parses the flag (a parsed
    flag's rule is checked by the config, on the parsed value)."""
    rule = spec.rule if kind in ("int", "float") else None

    def valid(value):
        if value is None:
            return True
        problem = rule.problem(value) if rule is not None else None
        if problem is None and spec.output:
            problem = dangling_symlink(value)
        if problem:
            raise flags.ValidationError(problem)
        return True

    if rule is not None or spec.output:
        flags.register_validator(name, valid, flag_values=flag_values)


def config_from_flags(config_cls, flag_values, exclude=(), **fixed):
    """The `config_cls` the parsed flags describe; `fixed` supplies the fields a driver sets itself.

    Excluded fields keep their defaults. A field without a default is a required flag.

    Raises:
      UserError: a required flag is missing, a `parse`d flag's text is not valid, or the config's
        own checks fail.
    """
    values = dict(fixed)
    hints = typing.get_type_hints(config_cls)
    fields = [f for f in dataclasses.fields(config_cls) if f.name not in exclude and f.name not in fixed]
    unset = set()
    for field in fields:  # an empty path would mean the current directory, refused later in other words
        spec = settings.declared(field)
        name = settings.flag_name(field)
        if (spec.path or spec.output) and flag_values[name].present and flag_values[name].value == "":
            if _required(field) or field.default is not None:  # --init '': from scratch would be a guess
                raise UserError(f"--{name} is empty: give a path")
            unset.add(field.name)  # as if not given (--data_dir=$UNSET for a dataset without one)
    for field in fields:
        if field.name in unset:
            values[field.name] = None
            continue
        spec = settings.declared(field)
        values[field.name] = _os_path(spec, settings.flag_name(field),
                                      _flag_value(field, spec, _kind(field, hints, spec), flag_values))
    return config_cls(**values)


def _os_path(spec, name, value):
    """A path flag with a '..' component, absolute as the OS reads it (see Setting.path); a trailing
    '/' (or a last component '.' or '..') stays a trailing '/': it says the path is a directory.

    Raises:
      UserError: the path is not valid UTF-8 (bytes of another encoding): TensorFlow's file functions
        cannot take it, and would fail with a traceback deep in a write.
    """
    if (spec.path or spec.output) and isinstance(value, str) and not is_utf8_name(value):
        raise UserError(f"--{name}={value.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8: "
                        f"TensorFlow cannot use such a path; rename it")
    if (spec.path or spec.output) and isinstance(value, str) and "://" not in value and ".." in value.split("/"):
        directory = value.endswith("/") or value.rsplit("/", 1)[-1] in (".", "..")
        return absolute(value).rstrip("/") + "/" if directory else absolute(value)
    return value


def _flag_value(field, spec, kind, flag_values):
    """The field's value from its parsed flag: a tuple for a repeated flag, a choice as declared
    (not its text), a `parse`d value, or the declared default for a flag not given."""
    name = settings.flag_name(field)
    flag = flag_values[name]
    if _required(field) and not flag.present:
        raise UserError(f"--{name} is required")
    value = flag.value
    if kind == "multi":
        value = tuple(_as_choice(spec, v) for v in value or ())
    elif spec.parse is not None and value is not None and flag.present:
        try:
            value = spec.parse(value)
        except ValueError as e:
            raise UserError(f"--{name}={value!r}: {e}") from None
    elif spec.parse is not None and value is not None:
        value = _field_default(field)  # the declared default, not its text
    else:
        value = _as_choice(spec, value)
    return value


def _as_choice(spec, value):
    """The declared choice whose text `value` is (choices may be numbers; flags hold text)."""
    if spec.choices is None or value is None:
        return value
    return next((c for c in spec.choices if str(c) == value), value)


def help_text(doc, flag_values, config_cls=None):
    """The tool's docstring as written, then each flag with its default (or `required`) and choices."""
    required = {settings.flag_name(f) for f in dataclasses.fields(config_cls) if _required(f)} if config_cls else set()
    lines = [(doc or "").strip("\n"), "", "flags:"]
    for flag in _all(flag_values):
        default = flag.default if not isinstance(flag.default, list) else ",".join(flag.default) or "none"
        choices = getattr(flag.parser, "enum_values", None)
        kind = f"<{'|'.join(choices)}>" if choices else flag.parser.flag_type()
        described = flag.help.split(">: ", 1)[1] if choices and flag.help.startswith("<") else flag.help
        described = described.replace(";\n    repeat this option to specify a list of values", " (repeatable)")
        given = "required" if flag.name in required else f"default: {default}"
        lines.append(f"  --{flag.name}={kind}  ({given})")
        lines.extend(f"      {line}" for line in described.splitlines())
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
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]  # after "--" all are arguments
    if any(arg in HELP_FLAGS for arg in options):
        sys.stdout.write(help_text(doc, flag_values, config_cls))
        return 0
    flag_values.unparse_flags()
    try:
        arguments = flag_values(argv)[1:]
    except flags.Error as e:
        return _error(_flag_problem(e))
    if arguments and not positional:
        return _error(f"unexpected argument {arguments[0]!r} (flags are --name=value)")
    if not flags.FLAGS.is_parsed():  # absl logging reads the global flags; ours are the driver's own
        flags.FLAGS.mark_as_parsed()
    import_tensorflow_quietly()
    try:
        extra = fixed(arguments) if fixed is not None else {}
        config = config_from_flags(config_cls, flag_values, **extra)
        status = body(config, arguments) if positional else body(config)
    except UserError as e:
        return _error(e)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; what finished is kept (staged outputs)
        progress.end_line()
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Exception as e:  # noqa: BLE001 (only out-of-memory is turned into a line; the rest re-raised)
        message = out_of_memory_message(e)
        if message is None:
            raise
        return _error(message)
    return int(status or 0)


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command Ctrl-C ended


def _flag_problem(error):
    """absl's `flag --steps=0: must be ...` in the words of the config's own checks: `--steps=0 must be ...`."""
    text = str(error)
    choice = re.match(r"^flag (--\S+?): value should be one of <(.*)>$", text)
    if choice:  # as check_settings says it
        return f"{choice[1]} must be one of {', '.join(choice[2].split('|'))}"
    text = re.sub(r"^ERROR::\s*", "", text)  # absl's own prefix (e.g. an unreadable --flagfile)
    return re.sub(r"^flag (--\S+?): (?=must |is not )", r"\1 ", text)


def _error(problem):
    """Prints `error: <problem>` as one line on stderr (on a line of its own: an open progress bar is
    ended first) and returns exit status 2."""
    progress.end_line()
    text = " ".join(line.strip() for line in str(problem).splitlines() if line.strip())
    print(f"error: {text}", file=sys.stderr)
    return 2
