"""Static policy: allowed snippets pass, each rule refuses what it should and names itself."""

from __future__ import annotations

import textwrap

import pytest

from cenas_jax.candidates.policy import check_policy

HEADER = "import flax.linen as nn\nimport jax.numpy as jnp\nimport numpy as np\nimport jax\nimport typing\n"


def rules(source: str, **kw) -> set[str]:
    return {v.rule for v in check_policy(textwrap.dedent(source), **kw)}


ALLOWED = [
    "import flax.linen as nn",
    "from flax import linen as nn",
    "from flax.linen import Dense, Conv",
    "import jax\nimport jax.numpy as jnp\nimport jax.nn\nimport jax.lax as lax",
    "from jax import numpy as jnp, lax, random",
    "from jax.nn import initializers",
    "import numpy as np\nshape = np.prod((2, 3))",
    "import functools, math, typing, dataclasses",
    "from typing import Any, Sequence, Callable",
    "from functools import partial",
    "from __future__ import annotations",
    "from dataclasses import field",
    # the __main__ idiom and dunder method definitions of linen code
    'if __name__ == "__main__":\n    print(1)',
    "class A:\n    def __call__(self, x):\n        return x\n    def __post_init__(self):\n        super().__post_init__()",
    '"""Docstring mentioning __call__ and __init__."""',
    "x = [i for i in range(3)]\ny = self_like = None",
    "class B:\n    def f(self):\n        return self._cache, self.config",
    "layers = []\nlayers.extend([1])",
    "f = lambda x: jnp.select([x > 0], [x])",
    'name = f"block_{3}"',
]


@pytest.mark.parametrize("source", ALLOWED)
def test_allowed_snippets_pass(source):
    assert check_policy(source) == []


REFUSED = [
    # rule "import"
    ("import os", "import"),
    ("import subprocess as sp", "import"),
    ("from os import path", "import"),
    ("import flax", "import"),
    ("from flax import serialization", "import"),
    ("import numpy.lib", "import"),
    ("from . import x", "import"),
    ("from numpy import *", "import"),
    ("from numpy import load", "import"),
    ("from jax import config", "import"),
    ("from typing import get_type_hints", "import"),
    ("import importlib", "import"),
    ("def f():\n    import socket", "import"),
    # rule "dunder-attribute"
    ("x = ().__class__.__bases__[0].__subclasses__()", "dunder-attribute"),
    ("def f(): pass\ng = f.__globals__", "dunder-attribute"),
    ("d = nn.Module.__dict__", "dunder-attribute"),
    ("try:\n    1/0\nexcept Exception as e:\n    t = e.__traceback__", "dunder-attribute"),
    # rule "dunder-name"
    ("b = __builtins__", "dunder-name"),
    ("x = __loader__", "dunder-name"),
    ("__builtins__ = {}", "dunder-name"),
    # rule "dunder-definition"
    ("class A:\n    def __getattr__(self, k):\n        return k", "dunder-definition"),
    ("class A:\n    def __del__(self):\n        pass", "dunder-definition"),
    ("class A:\n    def __init_subclass__(cls):\n        pass", "dunder-definition"),
    # rule "dunder-string"
    ('s = "{0.__class__}".format(1)', "dunder-string"),
    ('k = "__builtins__"', "dunder-string"),
    # rule "forbidden-name"
    ("exec('1')", "forbidden-name"),
    ("eval('1')", "forbidden-name"),
    ("c = compile('1', 'f', 'eval')", "forbidden-name"),
    ("f = open('/etc/passwd')", "forbidden-name"),
    ("m = __import__('o' + 's')", "forbidden-name"),
    ("g = globals()", "forbidden-name"),
    ("l = locals()", "forbidden-name"),
    ("v = vars()", "forbidden-name"),
    ("x = getattr(nn, 'Dense')", "forbidden-name"),
    ("setattr(nn, 'x', 1)", "forbidden-name"),
    ("delattr(nn, 'x')", "forbidden-name"),
    ("h = hasattr(nn, 'x')", "forbidden-name"),
    ("s = input()", "forbidden-name"),
    ("breakpoint()", "forbidden-name"),
    ("help(nn)", "forbidden-name"),
    ("m = memoryview(b'x')", "forbidden-name"),
    ("exit()", "forbidden-name"),
    ("quit()", "forbidden-name"),
    ("license()", "forbidden-name"),
    ("def getattr(a, b):\n    return a", "forbidden-name"),
    ("def f(eval):\n    return eval", "forbidden-name"),
    # rule "forbidden-attribute": re-exports, file I/O, frames, private internals, jax.config
    ("s = typing.sys.modules", "forbidden-attribute"),
    ("o = jax.version.os.system('id')", "forbidden-attribute"),
    ("m = nn.module.sys", "forbidden-attribute"),
    ("a = np.load('x.npy')", "forbidden-attribute"),
    ("np.save('x.npy', 1)", "forbidden-attribute"),
    ("a = np.fromfile('x')", "forbidden-attribute"),
    ("jnp.save('x.npy', 1)", "forbidden-attribute"),
    ("a = jnp.load('x.npy')", "forbidden-attribute"),
    ("f = np.lib.format", "forbidden-attribute"),
    ("np.zeros(3).tofile('x')", "forbidden-attribute"),
    ("np.zeros(3).dump('x')", "forbidden-attribute"),
    ("jax.config.update('jax_compilation_cache_dir', '/tmp/x')", "forbidden-attribute"),
    ("m = jax; m.config.update('x', 1)", "forbidden-attribute"),
    ("[jax][0].config.update('x', 1)", "forbidden-attribute"),
    ("jax.profiler.start_trace('/tmp')", "forbidden-attribute"),
    ("s = jax._src", "forbidden-attribute"),
    ("import dataclasses\nf = dataclasses._create_fn", "forbidden-attribute"),
    ("g = (i for i in []).gi_frame.f_back", "forbidden-attribute"),
    ("h = typing.get_type_hints(nn.Module)", "forbidden-attribute"),
]


@pytest.mark.parametrize("source, rule", REFUSED)
def test_refused_snippets_name_their_rule(source, rule):
    found = rules(HEADER + source)
    assert rule in found, f"{source!r}: expected rule {rule!r}, got {found}"


def test_getattr_builtins_trick_hits_two_rules():
    found = rules(HEADER + "os = getattr(__builtins__, '__import__')('os')")
    assert {"forbidden-name", "dunder-name", "dunder-string"} <= found


def test_violation_carries_line_and_message():
    source = "import flax.linen as nn\n\n\nx = eval('2')\n"
    (v,) = check_policy(source)
    assert (v.rule, v.lineno) == ("forbidden-name", 4)
    assert "eval" in v.message and "line 4" in str(v)


def test_size_limit():
    source = "x = 1\n" * 100
    assert rules(source, max_bytes=100) == {"size"}
    assert check_policy(source, max_bytes=10_000) == []


def test_syntax_error_is_not_a_policy_violation():
    assert check_policy("def f(:\n  pass") == []


def test_reports_every_violation():
    source = "import os\nx = eval('1')\ny = ().__class__\n"
    assert [v.rule for v in check_policy(source)] == ["import", "forbidden-name", "dunder-attribute"]


# ---- the allow-list of what a chain of attributes may reach (issue: re-exports outrun a deny-list) ----

REEXPORT_CHAINS = [
    # each reaches a module outside the allow-list through an allowed one
    "import flax.linen as nn\nm = nn.summary",
    "import typing\nm = typing.stdlib_re",
    "import flax.linen as nn\nm = nn.fp8_ops",
    "import typing\nm = typing.operator",
    "import jax\nm = jax.core",
    "from flax import linen\nm = linen.module",
    "import flax.linen as nn\nalias = nn\nm = alias.linear",
    "from typing import operator",
    "from flax.linen import summary",
    # a re-export's name on a value the checker cannot resolve
    "import typing\nm = [typing][0].operator",
    "def pick(m):\n    return m.stdlib_re",
]


@pytest.mark.parametrize("source", REEXPORT_CHAINS)
def test_chains_to_modules_off_the_allow_list_are_refused(source):
    violations = check_policy(source)
    assert violations, source
    assert {v.rule for v in violations} <= {"forbidden-attribute", "import"}


def test_a_refused_chain_names_the_module_it_reaches():
    (v,) = [v for v in check_policy("import flax.linen as nn\nm = nn.summary") if "flax.linen.summary" in v.message]
    assert v.rule == "forbidden-attribute" and v.lineno == 2


PUBLIC_API = [
    "import jax.numpy as jnp\nn = jnp.linalg.norm(jnp.ones(3))",
    "import jax\nys = jax.tree.map(lambda a: a, [1])",
    "import flax.linen as nn\ninit = nn.initializers.he_normal()",
    "import jax\ninit = jax.nn.initializers.glorot_uniform()",
    "import numpy as np\nrng = np.random.default_rng(0)",
    "import jax\nk = jax.random.PRNGKey(0)",
    "import jax.numpy as jnp\nt = jnp.float32",
    "import flax.linen as nn\nc = nn.Module",
    "import typing\nT = typing.Sequence[int]",
    "import math\nx = math.sqrt(2)",
]


@pytest.mark.parametrize("source", PUBLIC_API)
def test_the_public_layer_and_function_api_passes(source):
    assert check_policy(source) == []


def test_private_attributes_only_on_a_methods_own_receiver():
    method = "class A:\n    def f(self):\n        return self._x\n"
    plain = "def f(self):\n    return self._x\n"  # a plain function's parameter named self is any value
    shadowed = "class A:\n    def f(self):\n        g = lambda self: self._x\n        return g\n"
    nested = "class A:\n    def f(self):\n        def g():\n            return self._x\n        return g\n"
    assert check_policy(method) == [] and check_policy(nested) == []
    assert {v.rule for v in check_policy(plain)} == {"forbidden-attribute"}
    assert {v.rule for v in check_policy(shadowed)} == {"forbidden-attribute"}
