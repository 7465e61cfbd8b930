"""Residual MLP: a Dense projection followed by pre-LayerNorm GELU blocks with skip connections."""
# family: mlp
import flax.linen as nn


class ResidualMLPBlock(nn.Module):
    width: int
    expansion: int = 2

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        y = nn.Dense(self.width * self.expansion)(y)
        y = nn.gelu(y)
        y = nn.Dense(self.width)(y)
        return x + y


class Net(nn.Module):
    num_classes: int = 10
    width: int = 96
    depth: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        while x.shape[1] > 16:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.width)(x)
        for _ in range(self.depth):
            x = ResidualMLPBlock(self.width)(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(self.num_classes)(x)
