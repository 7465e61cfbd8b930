"""Dilated CNN: stacked 3x3 convolutions with growing dilation widen the receptive field without pooling."""
# family: dilated
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10
    width: int = 48

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(self.width, (3, 3), padding="SAME")(x))
        if x.shape[1] > 16:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        for dilation in (1, 2, 4):
            y = nn.Conv(self.width, (3, 3), padding="SAME", kernel_dilation=(dilation, dilation))(x)
            y = nn.BatchNorm(use_running_average=not train)(y)
            x = x + nn.relu(y)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
