"""Two-layer MLP on the flattened image, with large inputs average-pooled to at most 16x16 first."""
# family: mlp
import flax.linen as nn


class Net(nn.Module):
    # Output width: the number of classes of the dataset.
    num_classes: int = 10
    hidden: int = 128  # width of the single hidden layer

    @nn.compact
    def __call__(self, x, train: bool = False):
        # Keep the first Dense small on 64x64 inputs: pool down to <= 16x16.
        while x.shape[1] > 16:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        # Flatten (B, H, W, C) to (B, H*W*C): the MLP ignores the spatial layout.
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.hidden)(x)
        x = nn.relu(x)
        return nn.Dense(self.num_classes)(x)
