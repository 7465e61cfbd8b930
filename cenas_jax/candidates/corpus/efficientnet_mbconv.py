"""EfficientNet-style: MBConv blocks (expand, depthwise, squeeze-excite, project) with swish and identity skips."""
# family: efficientnet
import flax.linen as nn
import jax.numpy as jnp


class MBConv(nn.Module):
    features: int
    expansion: int = 4
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: nn.BatchNorm(use_running_average=not train)
        hidden = x.shape[-1] * self.expansion
        y = nn.swish(bn()(nn.Conv(hidden, (1, 1), use_bias=False)(x)))
        y = nn.Conv(hidden, (3, 3), strides=self.strides, padding="SAME",
                    feature_group_count=hidden, use_bias=False)(y)
        y = nn.swish(bn()(y))
        # Squeeze-and-excitation on the expanded channels.
        s = jnp.mean(y, axis=(1, 2), keepdims=True)
        s = nn.sigmoid(nn.Dense(hidden)(nn.swish(nn.Dense(max(1, hidden // 16))(s))))
        y = bn()(nn.Conv(self.features, (1, 1), use_bias=False)(y * s))
        return x + y if x.shape == y.shape else y


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.swish(nn.BatchNorm(use_running_average=not train)(x))
        for features, strides in ((16, 1), (24, 2), (24, 1), (40, 2)):
            x = MBConv(features, strides=strides if x.shape[1] >= 4 else 1)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
