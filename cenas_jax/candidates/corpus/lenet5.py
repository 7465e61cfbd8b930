"""LeNet-5: two tanh 5x5 convolutions with average pooling, then three Dense layers (120, 84, classes)."""
# family: lenet
import flax.linen as nn
import jax.numpy as jnp


def subsample(x):
    # LeNet's average pooling, skipped once the map is too small to halve.
    if x.shape[1] >= 4:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    return x


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.tanh(nn.Conv(6, (5, 5), padding="SAME")(x))
        x = subsample(x)
        x = nn.tanh(nn.Conv(16, (5, 5), padding="SAME")(x))
        x = subsample(x)
        # Global average pooling instead of flatten, so any input size works.
        x = jnp.mean(x, axis=(1, 2))
        x = nn.tanh(nn.Dense(120)(x))
        x = nn.tanh(nn.Dense(84)(x))
        return nn.Dense(self.num_classes)(x)
