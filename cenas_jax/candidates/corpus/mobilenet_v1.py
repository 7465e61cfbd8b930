"""MobileNet-v1 style: depthwise-separable convolutions (3x3 depthwise via feature_group_count, then 1x1)."""
# family: mobilenet
import flax.linen as nn
import jax.numpy as jnp


class SeparableConv(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        channels = x.shape[-1]
        x = nn.Conv(channels, (3, 3), strides=self.strides, padding="SAME",
                    feature_group_count=channels, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Conv(self.features, (1, 1), use_bias=False)(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        for features, strides in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
            if x.shape[1] < 4:
                strides = 1  # keep small inputs from vanishing
            x = SeparableConv(features, strides)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
