"""Wide and shallow CNN: a single 5x5 convolution with 128 filters, max pooling, global pooling and a linear head."""
# family: plain-cnn
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10
    width: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (5, 5), padding="SAME")(x)
        x = nn.relu(x)
        if x.shape[1] >= 4:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        # Average and max pooling together keep both mean response and peak detection.
        x = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=-1)
        x = nn.Dropout(0.25, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
