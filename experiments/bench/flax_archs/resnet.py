"""Small ResNet: stem conv16, a basic block at 16, a strided block at 32 with projection, global average (twin: torch_archs.ResNet)."""
import flax.linen as nn
import jax.numpy as jnp


def bn(train):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class Block(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)), use_bias=False)(x)
        y = nn.relu(bn(train)(y))
        y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(y)
        y = bn(train)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = bn(train)(nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x))
        return nn.relu(x + y)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(bn(train)(nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)))
        x = Block(16)(x, train)
        x = Block(32, strides=2)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
