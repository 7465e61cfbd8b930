"""VGG-style network: stages of two 3x3 convolutions followed by 2x2 max pooling, widths 32-64."""
# family: vgg
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10
    stages: Sequence[int] = (32, 64)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features in self.stages:
            x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(x))
            x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(x))
            if x.shape[1] >= 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.num_classes)(x)
