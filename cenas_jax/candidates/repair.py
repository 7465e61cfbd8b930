"""Static repairs of candidate source before it is checked: the standard imports a program forgot.

Small models often use ``nn``, ``jnp`` or ``Sequence`` without the import line (the
reference program they were shown had it). The contract (``templates/contract.txt``)
names the modules a candidate may use, so a missing import of one of them is added
rather than counted as a failed generation: ``complete_imports`` finds names that are
read but bound nowhere in the module (imports, definitions, assignments, arguments,
comprehension and ``with``/``except`` targets, ``global``), and for those in
``KNOWN_IMPORTS`` inserts the import after the module docstring. Anything else, and
source that does not parse, is returned unchanged: the checks then report it.

Runs on the search side (``ast`` only, nothing executed). The loop applies it when
``search.complete_imports`` is on (default) and stores the repaired program as the
candidate's source; the LLM's raw answer is kept in ``raw_text``.
"""

from __future__ import annotations

import ast
import builtins

KNOWN_IMPORTS: dict[str, str] = {
    "nn": "import flax.linen as nn",
    "jnp": "import jax.numpy as jnp",
    "jax": "import jax",
    "np": "import numpy as np",
    "math": "import math",
    "functools": "import functools",
    "partial": "from functools import partial",
    **{name: f"from typing import {name}" for name in
       ("Any", "Callable", "Dict", "List", "Optional", "Sequence", "Tuple", "Union")},
}


def _bound_and_read(tree: ast.AST) -> tuple[set[str], set[str]]:
    bound: set[str] = set()
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                bound.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return bound, read


def complete_imports(source: str) -> tuple[str, list[str]]:
    """(source with the missing standard imports added, the import lines added)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source, []
    bound, read = _bound_and_read(tree)
    missing = sorted((read - bound - set(dir(builtins))) & KNOWN_IMPORTS.keys())
    if not missing:
        return source, []
    added = [KNOWN_IMPORTS[name] for name in missing]
    lines = source.splitlines(keepends=True)
    at = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        at = body[0].end_lineno or 0  # after the module docstring
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines[:at] + [line + "\n" for line in added] + lines[at:]), added


__all__ = ["KNOWN_IMPORTS", "complete_imports"]
