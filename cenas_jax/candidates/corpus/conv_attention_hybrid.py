"""Hybrid CNN + attention: a convolutional stem, then self-attention over the spatial positions of its feature map."""
# family: hybrid
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10
    dim: int = 48

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features in (32, self.dim):
            x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(x))
            # Attention cost grows with the number of positions: pool down to <= 8x8.
            while x.shape[1] > 8:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        b, h, w, c = x.shape
        tokens = x.reshape((b, h * w, c))
        y = nn.LayerNorm()(tokens)
        y = nn.MultiHeadDotProductAttention(num_heads=4, deterministic=not train)(y, y)
        tokens = tokens + y
        tokens = tokens + nn.Dense(c)(nn.relu(nn.Dense(2 * c)(nn.LayerNorm()(tokens))))
        x = jnp.mean(tokens, axis=1)
        return nn.Dense(self.num_classes)(x)
