"""DenseNet-style: dense blocks where each layer's 12 new channels are concatenated to all before, with transitions."""
# family: densenet
import flax.linen as nn
import jax.numpy as jnp


class DenseLayer(nn.Module):
    growth: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        y = nn.Conv(4 * self.growth, (1, 1), use_bias=False)(y)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.growth, (3, 3), padding="SAME", use_bias=False)(y)
        return jnp.concatenate([x, y], axis=-1)


class Net(nn.Module):
    num_classes: int = 10
    growth: int = 12
    layers_per_block: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(2 * self.growth, (3, 3), padding="SAME", use_bias=False)(x)
        for block in range(2):
            for _ in range(self.layers_per_block):
                x = DenseLayer(self.growth)(x, train)
            if block == 0:
                # Transition: halve the channels with a 1x1 conv, then the resolution.
                x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
                x = nn.Conv(x.shape[-1] // 2, (1, 1), use_bias=False)(x)
                if x.shape[1] >= 4:
                    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
