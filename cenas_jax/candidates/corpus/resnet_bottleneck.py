"""ResNet with bottleneck blocks (1x1 reduce, 3x3, 1x1 expand x4) and BatchNorm, zero-initialised last scale."""
# family: resnet
import flax.linen as nn
import jax.numpy as jnp


class Bottleneck(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        out = self.features * 4
        y = nn.Conv(self.features, (1, 1), use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False)(y)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(out, (1, 1), use_bias=False)(y)
        # Zero-init the last scale so each block starts as the identity.
        y = nn.BatchNorm(use_running_average=not train, scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = nn.Conv(out, (1, 1), strides=self.strides, use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.relu(x + y)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(32, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = Bottleneck(8)(x, train)
        x = Bottleneck(16, strides=2 if x.shape[1] >= 4 else 1)(x, train)
        x = Bottleneck(16)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
