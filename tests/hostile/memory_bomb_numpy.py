# policy: memory
import numpy as np
import flax.linen as nn

hog = np.ones((1 << 20, 1 << 16), dtype=np.float32)

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

