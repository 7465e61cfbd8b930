"""GhostNet-style: ghost modules make half the channels with a 1x1 conv and the rest with cheap depthwise convs."""
# family: ghostnet
import flax.linen as nn
import jax.numpy as jnp


class GhostModule(nn.Module):
    features: int
    relu: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        primary = self.features // 2
        y = nn.Conv(primary, (1, 1), use_bias=False)(x)
        y = nn.BatchNorm(use_running_average=not train)(y)
        # The "ghost" features: a cheap 3x3 depthwise transform of the primary ones.
        g = nn.Conv(self.features - primary, (3, 3), padding="SAME",
                    feature_group_count=primary, use_bias=False)(y)
        g = nn.BatchNorm(use_running_average=not train)(g)
        out = jnp.concatenate([y, g], axis=-1)
        return nn.relu(out) if self.relu else out


class GhostBottleneck(nn.Module):
    hidden: int
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = GhostModule(self.hidden)(x, train)
        y = GhostModule(self.features, relu=False)(y, train)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), use_bias=False)(x)
        return x + y


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(16, (3, 3), padding="SAME")(x))
        for hidden, features in ((32, 16), (48, 32), (64, 32)):
            x = GhostBottleneck(hidden, features)(x, train)
            if x.shape[1] >= 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
