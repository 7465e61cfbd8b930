"""Gated CNN: each layer is a gated linear unit, one conv's output multiplied by the sigmoid of a second conv's."""
# family: gated
import flax.linen as nn
import jax.numpy as jnp


class GatedConv(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        # One conv with 2x features split into value and gate halves.
        y = nn.Conv(2 * self.features, (3, 3), padding="SAME")(x)
        value, gate = jnp.split(y, 2, axis=-1)
        return value * nn.sigmoid(gate)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features in (24, 48, 64):
            x = GatedConv(features)(x)
            x = nn.LayerNorm()(x)
            if x.shape[1] >= 4:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
