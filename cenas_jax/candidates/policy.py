"""Static policy for candidate source: an AST allow-list of imports and a deny-list of names (DESIGN.md §3).

This is the first of several layers, not the guard: allow-listed modules
re-export dangerous ones (``typing.sys``, ``jax.version.os``) and no static
check of Python is complete. The sandbox's process boundary must hold when
this misses something; the policy's job is to refuse the obvious early,
cheaply, and with a reason (every violation names its rule).

Rules (the ``rule`` field of a violation):
- ``size``: the source is larger than ``max_bytes`` (UTF-8).
- ``import``: an import of a module outside ``ALLOWED_MODULES``, a relative
  import, or ``import *``.
- ``dunder-attribute``: ``x.__anything__`` except ``ALLOWED_DUNDER_ATTRIBUTES``
  (``super().__init__()``-style calls and ``__call__``).
- ``dunder-name``: a name like ``__builtins__``/``__class__`` except
  ``ALLOWED_DUNDER_NAMES`` (``__name__`` for the ``if __name__ == "__main__"``
  idiom, ``__all__``, ``__doc__``).
- ``dunder-definition``: defining a dunder method other than
  ``ALLOWED_DUNDER_DEFINITIONS``; hooks such as ``__getattr__``, ``__del__``
  or ``__init_subclass__`` run implicitly and a network never needs them.
- ``dunder-string``: a string literal naming a dunder other than the allowed
  ones (``"__class__"`` for a ``str.format`` field or a dict key); catches
  ``"{0.__class__}".format(x)`` and ``ns["__builtins__"]``.
- ``forbidden-name``: ``FORBIDDEN_NAMES`` (exec, eval, getattr, open, ...), used
  or bound anywhere (binding them would hide the real builtin's absence).
- ``forbidden-attribute``: an attribute in ``FORBIDDEN_ATTRIBUTES`` anywhere in
  a chain (``typing.sys``, ``np.load``, ``gen.gi_frame``), a private
  (``_x``) attribute or one of ``SELF_ONLY_ATTRIBUTES`` (``config``) of anything
  but ``self``/``cls``, or a dotted path rooted
  at an imported module that starts with one of ``FORBIDDEN_MODULE_PATHS``
  (``jax.config``, ``jax.profiler``).

A source that does not parse yields no violations: syntax errors are the
build stage's to report (``contract.parse_source``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import re
import types

# Modules a candidate may import. ``jax.random`` and ``jax.nn.initializers``
# are reachable through ``jax`` anyway; listing them lets real code import them.
ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "flax.linen",
        "flax.linen.initializers",
        "jax",
        "jax.numpy",
        "jax.nn",
        "jax.nn.initializers",
        "jax.lax",
        "jax.random",
        "numpy",
        "functools",
        "math",
        "typing",
        "dataclasses",
        "__future__",
    }
)

# Modules an attribute chain may pass through: the importable ones, and submodules that real Flax code
# names through them (``jnp.linalg.norm``, ``np.random.default_rng``, ``jax.tree.map``). A chain that
# reaches any other module (``nn.summary.yaml``, ``typing.operator``) is refused: the allow-list of what a
# candidate may reach is "the public functions, classes and constants of these modules".
CHAIN_MODULES: frozenset[str] = ALLOWED_MODULES | frozenset(
    {
        "jax.numpy.linalg", "jax.numpy.fft", "jax.scipy", "jax.scipy.special", "jax.scipy.stats",
        "jax.scipy.linalg", "jax.scipy.stats.norm", "jax.image", "jax.tree", "jax.tree_util", "jax.dtypes", "jax.typing",
        "flax.linen.activation", "flax.linen.dtypes", "numpy.random", "numpy.linalg", "numpy.fft",
        "jax._src.nn.initializers",  # jax.nn.initializers' own name in some JAX versions
    }
)  # fmt: skip

FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars",
        "getattr", "setattr", "delattr", "hasattr", "input", "breakpoint", "help",
        "memoryview", "exit", "quit", "dir",
        # site builtins that read files or start a pager
        "copyright", "credits", "license",
    }
)  # fmt: skip

# Attribute names refused wherever they appear in a chain: modules that
# allow-listed modules re-export (typing.sys, jax.version.os,
# flax.linen.module.sys), file I/O of numpy/jax.numpy (np.load, jnp.save,
# arr.tofile), evaluation of strings (typing.get_type_hints), and frame
# internals that lead back to real builtins (gen.gi_frame.f_back.f_globals).
FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # modules
        "os", "sys", "subprocess", "io", "pickle", "cPickle", "shutil", "socket", "ctypes",
        "importlib", "builtins", "marshal", "multiprocessing", "threading", "signal",
        "pathlib", "tempfile", "glob", "posix", "nt", "resource", "gc", "inspect", "code",
        "codeop", "pty", "fcntl", "mmap", "asyncio", "urllib", "http", "zipfile",
        "tarfile", "shelve", "runpy", "sysconfig", "site", "atexit", "weakref",
        "traceback", "linecache", "tokenize", "ast", "types", "warnings", "logging",
        # numpy / jax.numpy file and foreign-code access
        "lib", "ctypeslib", "f2py", "distutils", "testing", "DataSource", "memmap",
        "save", "savez", "savez_compressed", "load", "loads", "dump", "dumps", "fromfile",
        "tofile", "loadtxt", "savetxt", "genfromtxt", "fromregex", "recfromcsv", "recfromtxt",
        # string evaluation
        "get_type_hints", "ForwardRef", "evaluate_forward_ref",
        # process control
        "system", "popen", "spawn", "fork", "kill", "environ", "exit", "_exit",
        # frames, code objects, tracebacks
        "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "f_back",
        "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next", "co_code",
        "func_globals",
        # re-exported modules found in the wild (see also reexported_module_names())
        "operator", "stdlib_re", "bltns", "pkgutil", "yaml", "pxla", "xb",
    }
)  # fmt: skip

# Dotted paths (after resolving import aliases) that a candidate may not reach:
# jax.config can move the compilation cache that other candidates read.
FORBIDDEN_MODULE_PATHS: tuple[str, ...] = (
    "jax.config",
    "jax.profiler",
    "jax.distributed",
    "jax.monitoring",
    "jax.experimental.compilation_cache",
    "jax.experimental.serialize_executable",
    "jax.export",
    "jax.extend",
    "jax.tools",
    "flax.serialization",
    "flax.training",
    "flax.io",
    "numpy.lib",
)

# Attributes refused unless read from ``self``/``cls`` (``self.config`` is a common module field; ``jax.config``
# reached through an expression the alias tracking cannot follow, ``[jax][0].config``, is not).
SELF_ONLY_ATTRIBUTES: frozenset[str] = frozenset(
    {"config", "profiler", "distributed", "monitoring", "compilation_cache", "serialize_executable"}
)

ALLOWED_DUNDER_NAMES: frozenset[str] = frozenset({"__name__", "__all__", "__doc__"})
ALLOWED_DUNDER_ATTRIBUTES: frozenset[str] = frozenset({"__init__", "__call__", "__post_init__"})
ALLOWED_DUNDER_DEFINITIONS: frozenset[str] = frozenset({"__init__", "__call__", "__post_init__", "__repr__"})
# Dunders that may appear inside string literals (docstrings talk about __call__).
_ALLOWED_DUNDER_STRINGS = ALLOWED_DUNDER_NAMES | ALLOWED_DUNDER_DEFINITIONS | {"__main__", "__future__"}

_DUNDER_RE = re.compile(r"__[A-Za-z_][A-Za-z0-9_]*?__")


def is_dunder(name: str) -> bool:
    """True for ``__x__``-style names."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


@dataclasses.dataclass(frozen=True)
class PolicyViolation:
    """One refusal: which rule, a message naming the offending construct, and the source line."""

    rule: str
    message: str
    lineno: int | None = None

    def __str__(self) -> str:
        where = f"line {self.lineno}: " if self.lineno else ""
        return f"{where}[{self.rule}] {self.message}"


def _module_ok(module: types.ModuleType) -> bool:
    return getattr(module, "__name__", None) in CHAIN_MODULES


@functools.lru_cache(maxsize=1)
def reexported_module_names() -> frozenset[str]:
    """Names under which the allow-listed modules re-export other modules (``typing.re``, ``nn.summary``).

    An attribute with one of these names is refused on anything but ``self``/``cls``, wherever the chain
    starts (``[typing][0].re`` cannot be resolved statically, its name can).
    """
    names: set[str] = set()
    for mod_name in sorted(ALLOWED_MODULES - {"__future__"}):
        try:
            mod = importlib.import_module(mod_name)
        except Exception:  # noqa: BLE001 - an optional module missing in this JAX
            continue
        for name in dir(mod):
            try:
                value = getattr(mod, name)
            except Exception:  # noqa: BLE001 - lazy attributes may fail to load
                continue
            if isinstance(value, types.ModuleType) and not _module_ok(value):
                names.add(name)
    import jax
    import numpy as np

    # Method names of everyday values stay usable (``layers.extend``, ``x.copy()``): only the modules behind
    # them would be dangerous, and those chains are resolved above when they start at an import.
    common = set().union(*(dir(t) for t in (list, dict, set, tuple, str, bytes, int, float, np.ndarray, jax.Array)))
    return frozenset(n for n in names if not n.startswith("_")) - {m.rsplit(".", 1)[-1] for m in CHAIN_MODULES} - common


def chain_refusal(full: str) -> str | None:
    """Why the dotted path ``full`` (rooted at an imported module) leaves the allow-list, or None.

    The path is followed on the real modules: each step from a module must land on a public function,
    class or constant, or on a module in ``CHAIN_MODULES``. A name the module lacks is left to the build
    stage (it fails there with an AttributeError that names it).
    """
    parts = full.split(".")
    if parts[0] not in {m.split(".")[0] for m in ALLOWED_MODULES}:
        return None
    try:
        obj: object = importlib.import_module(parts[0])
    except Exception:  # noqa: BLE001 - any failure means the name cannot be resolved statically
        return None
    walked = [parts[0]]
    for part in parts[1:]:
        if not isinstance(obj, (types.ModuleType, type)):
            return None  # an attribute of a value (an array's .shape): no module lies beyond it statically
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - any failure means the name cannot be resolved statically
            return None
        walked.append(part)
        if isinstance(obj, types.ModuleType) and not _module_ok(obj):
            return f"{'.'.join(walked)!r} is the module {obj.__name__!r}, which is not on the allow-list"
    return None


def module_allowed(name: str) -> bool:
    """True if ``import name`` is allowed."""
    return name in ALLOWED_MODULES


def _path_forbidden(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in FORBIDDEN_MODULE_PATHS)


def import_from_allowed(module: str, names: list[str]) -> str | None:
    """Why ``from module import names`` is refused, or None if it is allowed.

    Each name must be an allowed submodule (``from flax import linen``) or an
    attribute of an allowed module that is not forbidden (``from jax import random``).
    """
    for name in names:
        full = f"{module}.{name}"
        if full in ALLOWED_MODULES:
            continue
        if module not in ALLOWED_MODULES:
            return f"import of {full!r}: module {module!r} is not in the allow-list"
        if name == "*":
            return f"'from {module} import *' is not allowed (names must be explicit)"
        if name in FORBIDDEN_ATTRIBUTES or name in FORBIDDEN_NAMES or _path_forbidden(full):
            return f"import of {full!r} is forbidden"
        if name.startswith("_") and module != "__future__":
            return f"import of private name {full!r} is forbidden"
        why = chain_refusal(full)
        if why is not None:
            return f"import of {full!r}: {why}"
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.violations: list[PolicyViolation] = []
        # local name -> dotted module path it was bound to by an import (or a plain alias assignment)
        self.aliases: dict[str, str] = {}
        # names that are a method's own receiver here: the first parameter (self/cls) of a function
        # defined directly in a class body, unless an inner function or lambda rebinds it
        self.receivers: frozenset[str] = frozenset()
        self.in_class_body = False

    def add(self, rule: str, message: str, node: ast.AST | None) -> None:
        self.violations.append(PolicyViolation(rule, message, getattr(node, "lineno", None)))

    # ---- imports -------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not module_allowed(alias.name):
                self.add("import", f"import of {alias.name!r} is not in the allow-list {sorted(ALLOWED_MODULES)}", node)
                continue
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add("import", "relative imports are not allowed", node)
            return
        module = node.module or ""
        names = [a.name for a in node.names]
        why = import_from_allowed(module, names)
        if why is not None:
            self.add("import", why, node)
            return
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
            self._check_bound_name(alias.asname or alias.name, node)

    # ---- names ---------------------------------------------------------
    def _check_bound_name(self, name: str, node: ast.AST) -> None:
        if name in FORBIDDEN_NAMES:
            self.add("forbidden-name", f"name {name!r} is forbidden", node)
        elif is_dunder(name) and name not in ALLOWED_DUNDER_NAMES:
            self.add("dunder-name", f"name {name!r} is forbidden", node)

    def visit_Name(self, node: ast.Name) -> None:
        self._check_bound_name(node.id, node)

    def visit_arg(self, node: ast.arg) -> None:
        self._check_bound_name(node.arg, node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None and is_dunder(node.arg):
            self.add("dunder-name", f"keyword argument {node.arg!r} is forbidden", node)
        self.generic_visit(node)

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if is_dunder(node.name) and node.name not in ALLOWED_DUNDER_DEFINITIONS:
            self.add("dunder-definition", f"defining {node.name!r} is forbidden", node)
        elif node.name in FORBIDDEN_NAMES:
            self.add("forbidden-name", f"defining {node.name!r} is forbidden", node)
        saved = (self.receivers, self.in_class_body)
        if isinstance(node, ast.ClassDef):
            self.receivers, self.in_class_body = frozenset(), True
        else:
            params = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
            params += [a.arg for a in (node.args.vararg, node.args.kwarg) if a is not None]
            own = frozenset(params[:1]) & {"self", "cls"} if self.in_class_body else frozenset()
            self.receivers, self.in_class_body = (self.receivers - set(params)) | own, False
        self.generic_visit(node)
        self.receivers, self.in_class_body = saved

    visit_FunctionDef = _visit_def
    visit_AsyncFunctionDef = _visit_def
    visit_ClassDef = _visit_def

    def visit_Lambda(self, node: ast.Lambda) -> None:
        saved = (self.receivers, self.in_class_body)
        params = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
        self.receivers, self.in_class_body = self.receivers - params, False
        self.generic_visit(node)
        self.receivers, self.in_class_body = saved

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self._check_bound_name(name, node)

    visit_Nonlocal = visit_Global

    def visit_Assign(self, node: ast.Assign) -> None:
        # ``m = jax`` makes ``m`` an alias of the module, so ``m.config`` is caught too.
        path = self._dotted(node.value)
        if path is not None and path[0] in self.aliases:
            resolved = ".".join([self.aliases[path[0]], *path[1:]])
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.aliases[target.id] = resolved
        self.generic_visit(node)

    # ---- attributes ----------------------------------------------------
    @staticmethod
    def _dotted(node: ast.AST) -> list[str] | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        return None

    def _unresolved_module_name(self, node: ast.Attribute) -> bool:
        """A module's re-export name on a base the alias tracking cannot resolve (``f(typing).operator``)."""
        if node.attr not in reexported_module_names():
            return False
        path = self._dotted(node)
        return path is None or path[0] not in self.aliases

    def _outermost(self, node: ast.Attribute) -> bool:
        """Report a refused chain once, at its longest prefix that is refused (checked from the inside out)."""
        inner = node.value
        while isinstance(inner, ast.Attribute):
            path = self._dotted(inner)
            if path is not None and path[0] in self.aliases:
                full = ".".join([self.aliases[path[0]], *path[1:]])
                if _path_forbidden(full) or chain_refusal(full) is not None:
                    return False
            inner = inner.value
        return True

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        base = node.value
        if is_dunder(attr):
            if attr not in ALLOWED_DUNDER_ATTRIBUTES:
                self.add("dunder-attribute", f"attribute {attr!r} is forbidden", node)
        elif attr in FORBIDDEN_ATTRIBUTES:
            self.add("forbidden-attribute", f"attribute {attr!r} is forbidden (reaches files, processes or frames)", node)
        elif (attr.startswith("_") or attr in SELF_ONLY_ATTRIBUTES or self._unresolved_module_name(node)) and not (
            isinstance(base, ast.Name) and base.id in self.receivers
        ):
            kind = "private attribute" if attr.startswith("_") else "attribute"
            if attr in reexported_module_names() and not attr.startswith("_"):
                kind = "module attribute"
            self.add("forbidden-attribute", f"{kind} {attr!r} is forbidden outside a method's self/cls", node)
        else:
            path = self._dotted(node)
            if path is not None and path[0] in self.aliases and not isinstance(node.ctx, ast.Store):
                full = ".".join([self.aliases[path[0]], *path[1:]])
                why = chain_refusal(full) if not _path_forbidden(full) else f"it reaches {full!r}, which is forbidden"
                if why is not None and self._outermost(node):
                    self.add("forbidden-attribute", f"{'.'.join(path)!r}: {why}", node)
        self.generic_visit(node)

    # ---- strings -------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            for name in _DUNDER_RE.findall(node.value):
                if name not in _ALLOWED_DUNDER_STRINGS:
                    self.add("dunder-string", f"string literal names {name!r}", node)
                    break


def check_policy(source: str, max_bytes: int = 64_000) -> list[PolicyViolation]:
    """Check candidate source against the static policy; an empty list means allowed.

    A source that does not parse returns no violations (the build stage
    reports syntax errors with their line).
    """
    size = len(source.encode("utf-8", errors="replace"))
    if size > max_bytes:
        return [PolicyViolation("size", f"source is {size} bytes, the limit is {max_bytes}", None)]
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return []
    checker = _Checker()
    checker.visit(tree)
    return checker.violations


def format_violations(violations: list[PolicyViolation]) -> str:
    """One line per violation, for records and the CLI."""
    return "; ".join(str(v) for v in violations)
