"""Two-conv CNN with dropout: conv32 - pool - conv64 - pool - dropout - 128 - classes (twin: torch_archs.CNNDropout)."""
import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(32, (3, 3), padding=((1, 1), (1, 1)))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3), padding=((1, 1), (1, 1)))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(0.25, deterministic=not train)(x)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.num_classes)(x)
