"""ResNeXt: bottleneck blocks whose 3x3 convolution is split into parallel groups (cardinality 8)."""
# family: resnext
import flax.linen as nn
import jax.numpy as jnp


class ResNeXtBlock(nn.Module):
    features: int
    cardinality: int = 8
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (1, 1), use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(
            self.features, (3, 3), strides=self.strides, padding="SAME",
            feature_group_count=self.cardinality, use_bias=False,
        )(y)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features * 2, (1, 1), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=not train)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features * 2, (1, 1), strides=self.strides, use_bias=False)(x)
        return nn.relu(x + y)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x))
        x = ResNeXtBlock(32)(x, train)
        x = ResNeXtBlock(64, strides=2 if x.shape[1] >= 4 else 1)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
