"""MobileNet-style: stem conv16 stride 2, two depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, BatchNorm), global average (twin: torch_archs.MobileNet)."""
import flax.linen as nn
import jax.numpy as jnp


def bn(train):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(bn(train)(nn.Conv(16, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False)(x)))
        for width, stride in ((32, 1), (64, 2)):
            c = x.shape[-1]
            x = nn.Conv(c, (3, 3), strides=stride, padding=((1, 1), (1, 1)), feature_group_count=c, use_bias=False)(x)
            x = nn.relu(bn(train)(x))
            x = nn.relu(bn(train)(nn.Conv(width, (1, 1), use_bias=False)(x)))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
