"""Sharded decoder on 4 fake CPU devices equals the unsharded one (run in a subprocess of its own).

XLA fixes the number of host devices at start-up, so the check runs in a fresh
interpreter with ``--xla_force_host_platform_device_count=4``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from jax.sharding import PartitionSpec

from cenas_jax.llm.model import Llama, LlamaConfig
from cenas_jax.llm.sharding import DEFAULT_RULES, FSDP_RULES, _spec_for, make_mesh

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from cenas_jax.llm.model import Llama, LlamaConfig
    from cenas_jax.llm.sharding import make_mesh, shard_model, FSDP_RULES
    from cenas_jax.llm.sampler import Sampler

    assert len(jax.devices()) == 4, jax.devices()
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, attention_bias=True, tie_word_embeddings=False)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 128, (4, 24)))
    forward = nnx.jit(lambda m, t: m(t))
    for mesh_shape, rules in (((2, 2), None), ((4, 1), FSDP_RULES)):
        model = Llama(config, rngs=nnx.Rngs(0))
        want = np.asarray(forward(model, tokens))
        mesh = make_mesh(*mesh_shape)
        shard_model(model, mesh, *(() if rules is None else (rules,)))
        q = model.layers[0].attn.q_proj.kernel[...]
        expect = P("data", "model") if rules is None else P("data", None)
        assert q.sharding.spec == expect, q.sharding
        assert len(q.sharding.device_set) == 4 and q.addressable_shards[0].data.shape[0] == 64 // mesh_shape[0]
        got = forward(model, tokens)
        err = float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))
        assert err <= 1e-5, (mesh_shape, err)
        # The KV-cache path runs sharded too.
        cache = model.init_cache(4, 32)
        mask = jnp.zeros((4, 32), bool).at[:, :24].set(True)
        pos = jnp.broadcast_to(jnp.arange(24), (4, 24))
        ext = nnx.jit(lambda m, t, p, c, k: m.extend(t, p, c, 0, k))
        logits, _ = ext(model, tokens, pos, cache, mask)
        err = float(np.max(np.abs(np.asarray(logits) - want)) / np.max(np.abs(want)))
        assert err <= 1e-5, ("extend", mesh_shape, err)
    print("SHARDED_OK")
    """
)


def test_sharded_forward_equals_unsharded_on_4_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "SHARDED_OK" in r.stdout, r.stdout + r.stderr


def test_rules_map_logical_axes_and_skip_indivisible():
    mesh = make_mesh(1, 1)
    assert _spec_for((64, 128), ("embed", "heads"), DEFAULT_RULES, mesh) == PartitionSpec("data", "model")
    assert _spec_for((64, 128), ("embed", "heads"), FSDP_RULES, mesh) == PartitionSpec("data", None)
    assert _spec_for((64,), None, DEFAULT_RULES, mesh) == PartitionSpec()


def test_every_parameter_is_annotated():
    from flax import nnx

    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=1, num_heads=2,
                         num_kv_heads=1, head_dim=4, attention_bias=True)
    model = Llama(config)
    names = set()
    for path, v in nnx.iter_graph(model):
        if isinstance(v, nnx.Param):
            axes = v.get_metadata().get("out_sharding")
            assert axes is not None and len(axes) == v.ndim, (path, axes)
            names.update(axes)
    assert names == {"vocab", "embed", "heads", "kv", "mlp"}
