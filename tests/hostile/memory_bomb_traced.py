# policy: memory
# train: yes
# No parameters to speak of, but a 16 GB intermediate per batch: the budget passes, XLA's allocation fails.
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        big = x[:, :, None] * jnp.ones((1, 1, 2_000_000), x.dtype)
        return nn.Dense(self.num_classes)(jnp.sort(big, axis=2)[:, :, 0])  # a sort must materialise it
