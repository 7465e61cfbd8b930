"""ResNet with basic blocks (two 3x3 conv + BatchNorm) and projection shortcuts where the width or stride changes."""
# family: resnet
import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda: nn.BatchNorm(use_running_average=not train)
        y = nn.Conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
        y = norm()(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            x = norm()(x)
        return nn.relu(x + y)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = BasicBlock(16)(x, train)
        x = BasicBlock(32, strides=2)(x, train)
        x = BasicBlock(64, strides=2 if x.shape[1] >= 4 else 1)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
