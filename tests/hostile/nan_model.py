# policy: nan
# train: yes
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x) * jnp.nan
