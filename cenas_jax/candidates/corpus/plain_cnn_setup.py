"""Plain three-layer CNN written with setup() instead of nn.compact: conv-ReLU-pool stages, dropout, linear head."""
# family: plain-cnn
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    def setup(self):
        self.convs = [nn.Conv(f, (3, 3), padding="SAME") for f in (32, 64, 64)]
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Dense(self.num_classes)

    def __call__(self, x, train: bool = False):
        for conv in self.convs:
            x = nn.relu(conv(x))
            if x.shape[1] >= 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        x = self.dropout(x, deterministic=not train)
        return self.head(x)
