"""VGG-style network with BatchNorm after every convolution and dropout after every stage (16-32-64)."""
# family: vgg
import flax.linen as nn
import jax.numpy as jnp


class ConvBN(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.relu(x)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features, rate in ((16, 0.1), (32, 0.2), (64, 0.3)):
            x = ConvBN(features)(x, train)
            x = ConvBN(features)(x, train)
            if x.shape[1] >= 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.Dropout(rate, deterministic=not train)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
