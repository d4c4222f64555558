"""The package's import structure (issue 11): every module imports on its own, no import cycle, the
drivers stay the only command-line layer, and importing a driver does not start TensorFlow."""

import ast
import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest

import psp_tf

PACKAGE = pathlib.Path(psp_tf.__file__).parent
ROOT = PACKAGE.parent


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# Running psp_tf/convert/__main__.py is running the converter: it is the one module not imported.
IMPORTABLE = sorted(name for name in MODULES if not name.endswith(".__main__"))


def _is_package(name):
    return MODULES[name].name == "__init__.py"


def _resolve(name, importer):
    """The psp_tf module `name` (maybe a module.attribute) stands for, or None outside psp_tf."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module, node):
    """The psp_tf modules one import statement (or importlib.import_module("literal")) loads."""
    if isinstance(node, ast.Import):
        return [n.name for n in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module if _is_package(module) else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}".rstrip(".")
        # `from a import b`: b is a submodule when a file says so, else a name in a
        return [f"{base}.{n.name}" if f"{base}.{n.name}" in MODULES else base for n in node.names]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def _parents(name):
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


@functools.lru_cache(maxsize=None)
def _tree(name):
    """The parsed source of psp_tf module `name`, parsed once for all the tests (read only)."""
    path = MODULES[name]
    return ast.parse(path.read_text(), str(path))


def import_graph():
    """{module: {psp_tf modules it imports}}, every import statement anywhere in the file (function
    bodies included), with the packages each import runs first."""
    graph = {}
    for name in MODULES:
        edges = set()
        for node in ast.walk(_tree(name)):
            for target in _imported(name, node):
                resolved = _resolve(target, name)
                if resolved:
                    edges.update(p for p in [*_parents(resolved), resolved] if p in MODULES)
        edges.discard(name)
        edges.difference_update(_parents(name))  # a module's own packages are already running
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_cycle_finder_sees_a_function_level_cycle():
    """The walk counts imports inside functions and through importlib (the issue's hidden cycles)."""
    source = "def f():\n    import importlib\n    importlib.import_module('psp_tf.model')\n"
    module = "psp_tf.layers"
    edges = {t for node in ast.walk(ast.parse(source)) for t in _imported(module, node)}
    assert "psp_tf.model" in edges
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_below_the_drivers_imports_them():
    graph = import_graph()
    offenders = {m: sorted(e for e in edges if e.startswith("psp_tf.cli"))
                 for m, edges in graph.items() if not m.startswith("psp_tf.cli") and not m.endswith("__main__")}
    assert {m: e for m, e in offenders.items() if e} == {}


# The README's "what may import what", folder by folder: each layer's direct psp_tf imports (function
# bodies included) stay within its own and these. psp_tf/__init__.py (the lazy table of public names)
# and psp_tf/cli (the drivers) may import anything.
BASE = {"errors", "outputs", "startup", "progress", "settings", "checks", "distribute", "memory"}
NETWORK = {"presets", "classes", "layers", "backbone", "model", "model_dir", "precision"}
MAY_IMPORT = {
    "base": BASE,
    "network": BASE | NETWORK,
    "visualize": BASE | {"classes"},
    "data/": BASE | {"presets", "classes", "visualize"},
    "evaluation/": BASE | NETWORK | {"data/", "visualize"},
    "inference/": BASE | NETWORK | {"data/", "evaluation/", "visualize"},
    "export": BASE | NETWORK | {"data/", "evaluation/", "inference/", "visualize"},
    "convert/": BASE | NETWORK | {"export"},  # export: the converter's optional SavedModel
    "training/": BASE | NETWORK | {"data/", "evaluation/", "visualize"},
}
FOLDERS = ("cli", "convert", "data", "evaluation", "inference", "training")


def _layer(name):
    """A module's layer: its folder ('data/') or top-level module name, 'base' or 'network'."""
    parts = name.split(".")
    if len(parts) == 1:
        return "psp_tf"
    if parts[1] in FOLDERS:
        return f"{parts[1]}/"
    return "base" if parts[1] in BASE else "network" if parts[1] in NETWORK else parts[1]


def _unit(name):
    """What MAY_IMPORT names: a folder, or a top-level module by its own name."""
    parts = name.split(".")
    return "psp_tf" if len(parts) == 1 else f"{parts[1]}/" if parts[1] in FOLDERS else parts[1]


def test_each_layer_imports_only_what_the_readme_allows():
    graph = import_graph()
    assert {_layer(m) for m in graph} - {"psp_tf", "cli/"} == set(MAY_IMPORT), "a module outside every layer"
    breaches = sorted(f"{module} imports {target}" for module, edges in graph.items()
                      if _layer(module) in MAY_IMPORT and not module.endswith(".__main__")
                      for target in edges
                      if target.startswith("psp_tf") and _unit(target) != _unit(module)
                      and _unit(target) not in MAY_IMPORT[_layer(module)])
    assert breaches == []


def test_no_command_line_parsing_below_the_drivers():
    """argparse, absl flags and `if __name__ == "__main__"` live in psp_tf/cli only (and
    psp_tf/convert/__main__.py, which calls the convert driver)."""
    found = []
    for name in MODULES:
        if name.startswith("psp_tf.cli") or name.endswith(".__main__"):
            continue
        for node in ast.walk(_tree(name)):
            names = [n.name for n in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if "argparse" in names or module == "argparse" or (module == "absl" and "flags" in names) \
                    or "absl.flags" in names or module == "absl.flags":
                found.append(f"{name}:{node.lineno} imports a flag parser")
            if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
                found.append(f"{name}:{node.lineno} is an entry point")
    assert found == []


# One process: clearing psp_tf from sys.modules before each import makes each module start from a
# package that has imported nothing else of psp_tf, so a module that only worked because another had
# imported a submodule first (or set an attribute on the package) fails here. TensorFlow stays loaded
# between modules: what is proved is psp_tf's own imports, at one TensorFlow start instead of ~80.
_ISOLATED = r"""
import importlib, json, sys, traceback
light, modules = json.loads(sys.argv[1])
for name in light:
    importlib.import_module(name)
heavy = sorted(m for m in ("tensorflow", "keras", "cv2") if m in sys.modules)
failures = {}
for name in modules:
    for loaded in [m for m in sys.modules if m == "psp_tf" or m.startswith("psp_tf.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps({"heavy": heavy, "failures": failures}))
"""

# What a driver imports before it parses its flags: --help and a bad flag answer without TensorFlow.
LIGHT = ["psp_tf", "psp_tf.settings", "psp_tf.checks", "psp_tf.errors", "psp_tf.progress",
         *(name for name in IMPORTABLE if name.startswith("psp_tf.cli"))]


@pytest.fixture(scope="module")
def isolated_imports():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", _ISOLATED, json.dumps([LIGHT, IMPORTABLE])], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the fresh interpreter imports TensorFlow and every module
def test_every_module_imports_on_its_own(isolated_imports):
    assert isolated_imports["failures"] == {}


@pytest.mark.slow  # the same fresh interpreter
def test_drivers_import_without_tensorflow(isolated_imports):
    assert isolated_imports["heavy"] == []
