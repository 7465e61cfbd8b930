"""Xception-style: separable-convolution blocks with strided 1x1 residual shortcuts, ReLU before each separable conv."""
# family: xception
import flax.linen as nn
import jax.numpy as jnp


class SeparableConv(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False)(x)
        return nn.Conv(self.features, (1, 1), use_bias=False)(x)


class XceptionBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        stride = 2 if x.shape[1] >= 4 else 1
        shortcut = nn.Conv(self.features, (1, 1), strides=stride, use_bias=False)(x)
        shortcut = nn.BatchNorm(use_running_average=not train)(shortcut)
        y = SeparableConv(self.features)(nn.relu(x))
        y = nn.BatchNorm(use_running_average=not train)(y)
        y = SeparableConv(self.features)(nn.relu(y))
        y = nn.BatchNorm(use_running_average=not train)(y)
        y = nn.max_pool(y, (3, 3), strides=(stride, stride), padding="SAME")
        return y + shortcut


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(32, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        for features in (64, 128):
            x = XceptionBlock(features)(x, train)
        x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
