"""Pre-activation ResNet (norm-ReLU-conv ordering) with GroupNorm instead of BatchNorm, identity shortcuts."""
# family: resnet
import flax.linen as nn
import jax.numpy as jnp


class PreActBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.GroupNorm(num_groups=8)(x))
        y = nn.Conv(self.features, (3, 3), padding="SAME")(y)
        y = nn.relu(nn.GroupNorm(num_groups=8)(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME")(y)
        return x + y


class Net(nn.Module):
    num_classes: int = 10
    width: int = 32
    blocks_per_stage: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), padding="SAME")(x)
        for stage in range(2):
            if stage > 0 and x.shape[1] >= 4:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            for _ in range(self.blocks_per_stage):
                x = PreActBlock(self.width)(x)
        x = nn.relu(nn.GroupNorm(num_groups=8)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
