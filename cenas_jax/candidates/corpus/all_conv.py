"""All-convolutional net: strided 3x3 convolutions replace pooling, a 1x1 conv to class maps replaces Dense."""
# family: all-conv
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features in (32, 64):
            x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(x))
            # Downsampling by a learned strided convolution instead of max pooling.
            stride = 2 if x.shape[1] >= 4 else 1
            x = nn.relu(nn.Conv(features, (3, 3), strides=stride, padding="SAME")(x))
        # Classifier: 1x1 convs to one map per class, averaged over space.
        x = nn.relu(nn.Conv(64, (1, 1))(x))
        x = nn.Conv(self.num_classes, (1, 1))(x)
        return jnp.mean(x, axis=(1, 2))
