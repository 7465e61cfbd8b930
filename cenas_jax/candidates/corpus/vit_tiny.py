"""Small Vision Transformer: conv patchify, learned position embeddings, pre-LayerNorm attention blocks, mean pooling."""
# family: vit
import flax.linen as nn
import jax.numpy as jnp


class EncoderBlock(nn.Module):
    dim: int
    heads: int
    mlp_ratio: int = 2

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=not train)(y, y)
        x = x + y
        y = nn.LayerNorm()(x)
        y = nn.Dense(self.dim * self.mlp_ratio)(y)
        y = nn.Dense(self.dim)(nn.gelu(y))
        return x + y


class Net(nn.Module):
    num_classes: int = 10
    dim: int = 64
    depth: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        # A 4x4 grid of patches whatever the image size (2x2 pixels on digits, 8x8 on CIFAR).
        patch = max(1, x.shape[1] // 4)
        x = nn.Conv(self.dim, (patch, patch), strides=(patch, patch), padding="VALID")(x)
        b, h, w, c = x.shape
        x = x.reshape((b, h * w, c))
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w, c))
        x = x + pos
        for _ in range(self.depth):
            x = EncoderBlock(self.dim, self.heads)(x, train)
        x = nn.LayerNorm()(x)
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes)(x)
