# policy: policy
# bypass: build
# Reads a root-only host file: the uid drop must refuse it.
import numpy as np
import flax.linen as nn

data = np.fromfile("@@SECRET@@", dtype=np.uint8)

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

