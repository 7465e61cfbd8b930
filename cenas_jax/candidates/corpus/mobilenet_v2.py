"""MobileNet-v2 style: inverted residual blocks (1x1 expand, 3x3 depthwise, linear 1x1 project) with ReLU6."""
# family: mobilenet
import flax.linen as nn
import jax.numpy as jnp


class InvertedResidual(nn.Module):
    features: int
    expansion: int = 4
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        hidden = x.shape[-1] * self.expansion
        y = nn.Conv(hidden, (1, 1), use_bias=False)(x)
        y = nn.relu6(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(hidden, (3, 3), strides=self.strides, padding="SAME",
                    feature_group_count=hidden, use_bias=False)(y)
        y = nn.relu6(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features, (1, 1), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=not train)(y)
        # Residual only when the block keeps the shape (no stride, same width).
        return x + y if x.shape == y.shape else y


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu6(nn.BatchNorm(use_running_average=not train)(x))
        for features, strides in ((16, 1), (24, 2), (24, 1), (32, 2), (32, 1)):
            x = InvertedResidual(features, strides=strides if x.shape[1] >= 4 else 1)(x, train)
        x = nn.Conv(128, (1, 1), use_bias=False)(x)
        x = nn.relu6(nn.BatchNorm(use_running_average=not train)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
