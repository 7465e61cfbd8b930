"""MLP-Mixer: patch embedding, then blocks alternating token-mixing and channel-mixing MLPs with LayerNorm."""
# family: mixer
import flax.linen as nn
import jax.numpy as jnp


class MlpBlock(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(x.shape[-1])(y)


class MixerBlock(nn.Module):
    tokens_hidden: int
    channels_hidden: int

    @nn.compact
    def __call__(self, x):
        # Token mixing works across patches: swap the token and channel axes.
        y = nn.LayerNorm()(x)
        y = jnp.swapaxes(y, 1, 2)
        y = MlpBlock(self.tokens_hidden)(y)
        x = x + jnp.swapaxes(y, 1, 2)
        y = nn.LayerNorm()(x)
        return x + MlpBlock(self.channels_hidden)(y)


class Net(nn.Module):
    num_classes: int = 10
    dim: int = 64
    depth: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        patch = max(1, x.shape[1] // 8)
        x = nn.Conv(self.dim, (patch, patch), strides=(patch, patch), padding="VALID")(x)
        x = x.reshape((x.shape[0], -1, self.dim))
        for _ in range(self.depth):
            x = MixerBlock(tokens_hidden=64, channels_hidden=128)(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=1))
