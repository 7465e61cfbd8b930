"""Three hidden-layer MLP with tapering widths and dropout between layers."""
# family: mlp
from typing import Sequence

import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10
    widths: Sequence[int] = (256, 128, 64)
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False):
        while x.shape[1] > 16:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for width in self.widths:
            x = nn.Dense(width)(x)
            x = nn.relu(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
