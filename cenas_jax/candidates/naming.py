"""Which class of a file is the candidate's ``Net``, when the file names it otherwise.

The contract looks up ``Net``. A model-zoo file defines ``ResNet``, ``ResNet18 = partial(ResNet, ...)``
and so on, and no ``Net``; ``cenas eval --net ResNet18`` and a corpus file's ``# net: ResNet18`` line
choose one. The choice is made in the text, by appending ``Net = ResNet18``, so the program the
sandbox checks, trains and stores is exactly what it evaluates, and nothing of it runs here.
"""

from __future__ import annotations

import ast
import keyword


class NetNameError(ValueError):
    """A ``--net`` name that is no identifier, or that the file does not define at top level."""


def check_name(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise NetNameError(f"--net {name!r}: not a Python identifier (give the class or partial's name, e.g. ResNet18)")
    return name


def top_level_names(source: str) -> set[str] | None:
    """Names bound at the top level of ``source`` (classes, functions, assignments); None when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def select_net(source: str, name: str, where: str = "the file") -> str:
    """``source`` with ``Net = name`` appended; ``NetNameError`` when ``name`` is not defined at its top level.

    A source that does not parse is returned with the line appended all the same: the sandbox's
    syntax stage reports it as the candidate's error.
    """
    check_name(name)
    names = top_level_names(source)
    if names is not None and name not in names:
        classes = sorted(n for n in names if n[:1].isupper())
        raise NetNameError(f"{where} defines no top-level {name!r}"
                           + (f"; it defines {', '.join(classes)}" if classes else ""))
    return source.rstrip("\n") + f"\n\n\nNet = {name}  # the class evaluated (chosen by name)\n"
