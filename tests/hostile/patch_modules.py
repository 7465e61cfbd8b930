# policy: ok policy
# Plain attribute assignment on allow-listed modules (a policy may let it through): the worker puts
# the originals back, so the next candidate in the same worker is unaffected (test_sandbox checks).
import math

import flax.linen as nn
import jax.numpy as jnp

math.pi = 3.0
jnp.mean = lambda *args, **kwargs: 1.0
nn.relu = lambda x: x * 0.0


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)
