"""ConvNeXt-style: 7x7 depthwise conv, LayerNorm, inverted MLP with GELU and layer scale, in residual blocks."""
# family: convnext
import flax.linen as nn
import jax.numpy as jnp


class ConvNeXtBlock(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.dim, (7, 7), padding="SAME", feature_group_count=self.dim)(x)
        y = nn.LayerNorm(epsilon=1e-6)(y)
        y = nn.gelu(nn.Dense(4 * self.dim)(y))
        y = nn.Dense(self.dim)(y)
        # Layer scale: small learned per-channel factor so deep stacks start near identity.
        gamma = self.param("layer_scale", nn.initializers.constant(1e-2), (self.dim,))
        return x + gamma * y


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        patch = 2 if x.shape[1] >= 16 else 1
        x = nn.Conv(32, (patch, patch), strides=(patch, patch))(x)
        x = nn.LayerNorm(epsilon=1e-6)(x)
        for dim, depth in ((32, 2), (64, 2)):
            if x.shape[-1] != dim:
                # Downsampling layer between stages.
                x = nn.LayerNorm(epsilon=1e-6)(x)
                stride = 2 if x.shape[1] >= 4 else 1
                x = nn.Conv(dim, (2, 2), strides=(stride, stride), padding="SAME")(x)
            for _ in range(depth):
                x = ConvNeXtBlock(dim)(x)
        x = nn.LayerNorm(epsilon=1e-6)(jnp.mean(x, axis=(1, 2)))
        return nn.Dense(self.num_classes)(x)
