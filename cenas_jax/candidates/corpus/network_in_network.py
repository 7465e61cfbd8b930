"""Network in Network: mlpconv blocks (a BatchNorm spatial conv, then two 1x1 convs), class maps, global pooling."""
# family: nin
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MlpConv(nn.Module):
    features: Sequence[int]
    kernel: int

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features[0], (self.kernel, self.kernel), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        for f in self.features[1:]:
            x = nn.relu(nn.Conv(f, (1, 1))(x))
        return x


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = MlpConv((48, 32, 32), kernel=5)(x, train)
        if x.shape[1] >= 4:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = nn.Dropout(0.3, deterministic=not train)(x)
        x = MlpConv((64, 64, 64), kernel=3)(x, train)
        x = nn.Conv(self.num_classes, (1, 1))(x)
        return jnp.mean(x, axis=(1, 2))
