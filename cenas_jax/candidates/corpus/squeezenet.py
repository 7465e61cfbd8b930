"""SqueezeNet-style: fire modules (1x1 squeeze, then parallel 1x1 and 3x3 expand) and a convolutional classifier."""
# family: squeezenet
import flax.linen as nn
import jax.numpy as jnp


class Fire(nn.Module):
    squeeze: int
    expand: int

    @nn.compact
    def __call__(self, x):
        s = nn.relu(nn.Conv(self.squeeze, (1, 1))(x))
        e1 = nn.relu(nn.Conv(self.expand, (1, 1))(s))
        e3 = nn.relu(nn.Conv(self.expand, (3, 3), padding="SAME")(s))
        return jnp.concatenate([e1, e3], axis=-1)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x))
        for i, (squeeze, expand) in enumerate(((8, 32), (8, 32), (16, 64), (16, 64))):
            x = Fire(squeeze, expand)(x)
            if i % 2 == 1 and x.shape[1] >= 4:
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = nn.Dropout(0.3, deterministic=not train)(x)
        # The classifier is a 1x1 conv to one map per class, averaged over space.
        x = nn.Conv(self.num_classes, (1, 1))(x)
        return jnp.mean(x, axis=(1, 2))
