"""Inception-style: modules with parallel 1x1, 3x3, double-3x3 and pooled branches concatenated on channels."""
# family: inception
import flax.linen as nn
import jax.numpy as jnp


class InceptionModule(nn.Module):
    c1: int
    c3: int
    c5: int
    cpool: int

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k: nn.Conv(f, k, padding="SAME")
        b1 = nn.relu(conv(self.c1, (1, 1))(x))
        b3 = nn.relu(conv(self.c3 // 2, (1, 1))(x))
        b3 = nn.relu(conv(self.c3, (3, 3))(b3))
        # Two stacked 3x3 convolutions see a 5x5 window with fewer weights.
        b5 = nn.relu(conv(self.c5 // 2, (1, 1))(x))
        b5 = nn.relu(conv(self.c5, (3, 3))(b5))
        b5 = nn.relu(conv(self.c5, (3, 3))(b5))
        bp = nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
        bp = nn.relu(conv(self.cpool, (1, 1))(bp))
        return jnp.concatenate([b1, b3, b5, bp], axis=-1)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x))
        x = InceptionModule(16, 24, 8, 8)(x)
        if x.shape[1] >= 4:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = InceptionModule(24, 32, 16, 16)(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
