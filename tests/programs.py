"""Candidate programs the tests share (importable as ``programs`` from any test module)."""

from __future__ import annotations


def mlp(width: int = 32, act: str = "relu", depth: int = 1) -> str:
    """A valid digits MLP, the test suite's standard candidate: ``depth`` hidden ``nn.Dense(width)`` layers with
    activation ``act``, then ``nn.Dense(self.num_classes)``; (width, act, depth) make programs distinct.

    ``mlp(32)`` has 64·32 + 32 + 32·10 + 10 parameters on digits (8x8x1 inputs).
    """
    hidden = "".join(f"        x = nn.{act}(nn.Dense({width})(x))\n" for _ in range(depth))
    return (
        "import flax.linen as nn\n\n\nclass Net(nn.Module):\n    num_classes: int = 10\n\n    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n        x = x.reshape((x.shape[0], -1))\n"
        f"{hidden}        return nn.Dense(self.num_classes)(x)\n"
    )
