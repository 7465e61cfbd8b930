"""ShuffleNet-v2 style: split channels, transform one half (1x1, depthwise 3x3, 1x1), concatenate and shuffle."""
# family: shufflenet
import flax.linen as nn
import jax.numpy as jnp


def channel_shuffle(x, groups: int = 2):
    b, h, w, c = x.shape
    x = x.reshape((b, h, w, groups, c // groups))
    return jnp.swapaxes(x, 3, 4).reshape((b, h, w, c))


class ShuffleUnit(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        left, right = jnp.split(x, 2, axis=-1)
        c = right.shape[-1]
        norm = lambda: nn.BatchNorm(use_running_average=not train)
        right = nn.relu(norm()(nn.Conv(c, (1, 1), use_bias=False)(right)))
        right = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False)(right)
        right = norm()(right)
        right = nn.relu(norm()(nn.Conv(c, (1, 1), use_bias=False)(right)))
        return channel_shuffle(jnp.concatenate([left, right], axis=-1))


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x))
        for width in (32, 64):
            x = nn.relu(nn.Conv(width, (1, 1))(x))
            x = ShuffleUnit()(x, train)
            x = ShuffleUnit()(x, train)
            if x.shape[1] >= 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
