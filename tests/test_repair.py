"""complete_imports: the standard imports a generated program forgot, added statically."""

import ast

from cenas_jax.candidates.repair import complete_imports

BODY = '''class Net(nn.Module):
    num_classes: int = 10
    widths: Sequence[int] = (64, 32)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return jnp.asarray(nn.Dense(self.num_classes)(x))
'''


def test_missing_imports_are_added_after_the_docstring():
    src = '"""An MLP."""\n' + BODY
    out, added = complete_imports(src)
    assert added == ["from typing import Sequence", "import jax.numpy as jnp", "import flax.linen as nn"]
    assert out.startswith('"""An MLP."""\n')
    tree = ast.parse(out)
    assert isinstance(tree.body[0], ast.Expr)  # still the docstring
    imported = {(a.asname or a.name) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert {"nn", "jnp", "Sequence"} <= imported
    # Running the repaired program defines Net (the import lines are real).
    ns: dict = {}
    exec(compile(out, "<t>", "exec"), ns)
    assert ns["Net"]().widths == (64, 32)


def test_complete_programs_and_unknown_names_are_left_alone():
    full = "import flax.linen as nn\nimport jax.numpy as jnp\nfrom typing import Sequence\n\n" + BODY
    assert complete_imports(full) == (full, [])
    odd = BODY.replace("jnp.asarray", "torch.tensor")
    out, added = complete_imports(odd)
    assert "torch" not in "".join(added) and "import torch" not in out
    # Locally bound names are not imports to add: a parameter called np, a loop variable called math.
    local = "import flax.linen as nn\n\ndef f(np):\n    return np + 1\n\nfor math in range(2):\n    pass\n"
    assert complete_imports(local) == (local, [])


def test_source_that_does_not_parse_is_unchanged():
    bad = BODY + "    return (\n"
    assert complete_imports(bad) == (bad, [])
