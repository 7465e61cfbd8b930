# policy: budget
import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(200_000)(x)
        x = nn.Dense(50_000)(x)
        return nn.Dense(self.num_classes)(x)
