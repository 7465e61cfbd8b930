"""ConvMixer: patch embedding, then blocks of residual depthwise conv (spatial mixing) and pointwise conv."""
# family: convmixer
import flax.linen as nn
import jax.numpy as jnp


class ConvMixerBlock(nn.Module):
    dim: int
    kernel: int = 5

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.dim, (self.kernel, self.kernel), padding="SAME", feature_group_count=self.dim)(x)
        y = nn.BatchNorm(use_running_average=not train)(nn.gelu(y))
        x = x + y
        x = nn.Conv(self.dim, (1, 1))(x)
        return nn.BatchNorm(use_running_average=not train)(nn.gelu(x))


class Net(nn.Module):
    num_classes: int = 10
    dim: int = 64
    depth: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        # Patches of 2 on small images, larger on big ones: about 16x16 tokens at most.
        patch = max(1, x.shape[1] // 16)
        x = nn.Conv(self.dim, (patch, patch), strides=(patch, patch))(x)
        x = nn.BatchNorm(use_running_average=not train)(nn.gelu(x))
        for _ in range(self.depth):
            x = ConvMixerBlock(self.dim)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
