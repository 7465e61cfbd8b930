"""Two-path multi-scale CNN: a full-resolution path and a half-resolution path, fused by upsampling and concat."""
# family: multiscale
import flax.linen as nn
import jax
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[1] > 32:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        fine = nn.relu(nn.Conv(24, (3, 3), padding="SAME")(x))
        fine = nn.relu(nn.Conv(24, (3, 3), padding="SAME")(fine))
        coarse = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        coarse = nn.relu(nn.Conv(48, (3, 3), padding="SAME")(coarse))
        coarse = nn.relu(nn.Conv(48, (3, 3), padding="SAME")(coarse))
        # Bring the coarse path back to the fine resolution before fusing.
        coarse = jax.image.resize(coarse, fine.shape[:3] + coarse.shape[3:], method="nearest")
        x = jnp.concatenate([fine, coarse], axis=-1)
        x = nn.relu(nn.Conv(64, (1, 1))(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
