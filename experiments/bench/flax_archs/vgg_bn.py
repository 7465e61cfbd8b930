"""VGG-style with BatchNorm: [conv16 x2, pool, conv32 x2, pool], global average, classes (twin: torch_archs.VGGBN)."""
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for width in (16, 32):
            for _ in range(2):
                x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
