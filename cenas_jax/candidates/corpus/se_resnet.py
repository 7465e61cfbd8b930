"""SE-ResNet: residual blocks whose output channels are re-weighted by squeeze-and-excitation gates."""
# family: senet
import flax.linen as nn
import jax.numpy as jnp


class SqueezeExcite(nn.Module):
    reduction: int = 4

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Dense(max(1, channels // self.reduction))(s))
        s = nn.sigmoid(nn.Dense(channels)(s))
        return x * s


class SEBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=not train)(y)
        y = SqueezeExcite()(y)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), use_bias=False)(x)
        return nn.relu(x + y)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(24, (3, 3), padding="SAME")(x))
        for features in (24, 48):
            x = SEBlock(features)(x, train)
            if x.shape[1] >= 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
