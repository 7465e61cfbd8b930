# policy: timeout
# train: yes
# An infinite loop inside the compiled program: tracing and the shape check pass, training never ends.
import flax.linen as nn
import jax
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.num_classes)(x)
        start = jnp.sum(x > 1e9).astype(jnp.int32)  # data-dependent: nothing to fold at compile time
        n = jax.lax.while_loop(lambda i: i >= 0, lambda i: (i + 1) % 1000, start)
        return x + 0.0 * n.astype(x.dtype)
