# policy: policy
# bypass: build
import flax.linen as nn

open("@@MARKER@@", "w").write("escaped")

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

