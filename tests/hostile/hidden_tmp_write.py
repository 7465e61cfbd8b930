# policy: policy
# bypass: build
# The test's /tmp directory is hidden behind the private tmpfs: the path does not exist inside.
import typing
import flax.linen as nn

os = typing.sys.modules["os"]
os.open("@@HIDDEN@@", os.O_CREAT | os.O_WRONLY, 0o644)

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

