# policy: policy
# bypass: build
import typing
import flax.linen as nn

socket = typing.sys.modules["socket"] if "socket" in typing.sys.modules else None
if socket is None:
    raise RuntimeError("socket module not loaded")
socket.create_connection(("127.0.0.1", @@PORT@@), timeout=2).sendall(b"escaped")

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

