"""The sampler's narrower copy of the weight matrices (``Sampler(weights_dtype=...)``, ``sampling.weights_dtype``).

A bfloat16 copy changes logits by bfloat16's rounding, so these tests state tolerances of their own (the float32
paths keep theirs, in test_llm_model.py and test_llm_sampler.py): on SmolLM2 against transformers in float32, the
largest logit error at most 2e-2 of the largest logit (measured 8-9e-3), the mean KL divergence of the next-token
law at most 1e-3 nats a position (measured 1.5-1.8e-4) and at most 1e-2 at any position (measured <= 3.6e-3), the
same argmax at >= 98% of positions (measured 99.0-100%), and the same 40 greedy tokens on a chat prompt.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_llm_sampler import EOS, PROMPTS, CharTokenizer, _naive_greedy

from cenas_jax.config import ConfigError, LoRAConfig, SamplingConfig
from cenas_jax.errors import UserError
from cenas_jax.llm import sampler as sampler_mod
from cenas_jax.llm.lora import apply_lora
from cenas_jax.llm.model import Linear, Llama, LlamaConfig
from cenas_jax.llm.sampler import Sampler, native_bfloat16, resolve_weights_dtype


def _tiny(tied: bool, lora: bool = False) -> Llama:
    config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, tie_word_embeddings=tied, attention_bias=not tied,
                         max_position_embeddings=512, eos_token_ids=(EOS,))
    m = Llama(config, rngs=nnx.Rngs(3))
    for _, v in nnx.iter_graph(m):  # well-separated logits, as in test_llm_sampler.py
        if isinstance(v, nnx.Param) and v.ndim == 2:
            v.set_value(v[...] * 20.0)
    if lora:
        apply_lora(m, LoRAConfig(rank=4, layers=(1,)), nnx.Rngs(4))
    return m


def _bf16(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_linear_with_a_bfloat16_kernel_rounds_its_input_and_sums_in_float32():
    lin = Linear(24, 40, use_bias=True, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    lin.bias.set_value(jnp.linspace(-1, 1, 40))
    x = jax.random.normal(jax.random.key(1), (3, 5, 24))
    want32 = np.asarray(x, np.float64) @ np.asarray(lin.kernel[...], np.float64) + np.asarray(lin.bias[...])
    np.testing.assert_allclose(np.asarray(lin(x)), want32, rtol=1e-5, atol=1e-5)  # float32 kernel: as nnx.Linear
    lin.kernel.set_value(lin.kernel[...].astype(jnp.bfloat16))
    got = lin(x)
    assert got.dtype == jnp.float32
    want = _bf16(x) @ _bf16(lin.kernel[...]) + np.asarray(lin.bias[...])  # exact products of the rounded values
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(np.asarray(got) - want32)) > 1e-4  # the rounding is real, so the test can tell


@pytest.mark.parametrize("tied", [True, False])
def test_the_copy_holds_matrices_only_and_is_made_once(tied):
    m = _tiny(tied, lora=True)
    s = Sampler(m, CharTokenizer(), eos_token_ids=(), weights_dtype="bfloat16")
    _, state = s._split()
    kinds = {}
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        name = jax.tree_util.keystr(path)
        kinds[name] = x.dtype
        want = jnp.bfloat16 if ("kernel" in name or "embedding" in name) else jnp.float32
        assert x.dtype == want, name
    assert any("lora_a" in k for k in kinds) and any("['base']['kernel']" in k for k in kinds)
    first = jax.tree.leaves(s._split()[1])
    again = jax.tree.leaves(s._split()[1])
    assert all(a is b for a, b in zip(first, again))  # reused while the model's arrays are the same
    proj = m.layers[0].mlp.up_proj
    proj.kernel.set_value(proj.kernel[...] + 1.0)
    fresh = s._split()[1]["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    np.testing.assert_array_equal(np.asarray(fresh), np.asarray(proj.kernel[...].astype(jnp.bfloat16)))


def test_float32_or_none_leaves_the_model_as_it_is():
    m = _tiny(False)
    for wd in (None, "float32"):
        s = Sampler(m, CharTokenizer(), eos_token_ids=(), weights_dtype=wd)
        assert s.weights_dtype is None
        assert all(a is b for a, b in zip(jax.tree.leaves(s._split()[1]), jax.tree.leaves(nnx.split(m)[1])))
    with pytest.raises(UserError, match="weights_dtype"):
        Sampler(m, CharTokenizer(), weights_dtype="int8")


@pytest.mark.parametrize("tied", [True, False])
def test_greedy_decoding_uses_the_copy_on_every_path(tied):
    """Prefill, decode, shared prefix, held prompts and speculative decoding all read the copy: greedy tokens
    equal a cache-free greedy pass of the model made from the copy."""
    m = _tiny(tied, lora=True)
    lb = m.layers[1].attn.q_proj.lora.lora_b
    lb.set_value(jax.random.normal(jax.random.key(5), lb.shape) * 0.5)  # an adapter that changes the outputs
    s = Sampler(m, CharTokenizer(), eos_token_ids=(), weights_dtype="bfloat16", prompt_bucket=8)
    narrow = nnx.merge(*s._split())
    ids = s.encode(PROMPTS, chat=False)
    want = [_naive_greedy(narrow, i, 12) for i in ids]
    got = s.generate(PROMPTS, chat=False, max_new_tokens=12)
    assert [list(c.token_ids) for c in got] == want
    rows = [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3  # rows share prompts: held prompts
    held = s.generate(rows, chat=False, max_new_tokens=12)
    assert s.last_held_prompts == 2
    assert [list(c.token_ids) for c in held] == [want[0]] * 3 + [want[1]] * 3
    spec = Sampler(m, CharTokenizer(), eos_token_ids=(), weights_dtype="bfloat16", speculative_k=3)
    assert [list(c.token_ids) for c in spec.generate(PROMPTS, chat=False, max_new_tokens=12)] == want
    # The copy is not the float32 model (so the equalities above test the copy); how far its logits may move
    # is stated on SmolLM2 below (this model's weights are scaled up 20 times, which magnifies the rounding).
    t = jnp.asarray([ids[1]])
    assert np.max(np.abs(np.asarray(m(t)) - np.asarray(narrow(t)))) > 1e-3


def test_resolve_weights_dtype(monkeypatch):
    monkeypatch.setattr(sampler_mod, "native_bfloat16", lambda: True)
    assert resolve_weights_dtype("auto", jnp.float32) == "bfloat16"
    assert resolve_weights_dtype("auto", jnp.bfloat16) is None  # a bfloat16 model is already narrow
    assert resolve_weights_dtype("float32", jnp.float32) is None
    assert resolve_weights_dtype("bfloat16", jnp.float32) == "bfloat16"
    monkeypatch.setattr(sampler_mod, "native_bfloat16", lambda: False)
    assert resolve_weights_dtype("auto", jnp.float32) is None
    assert resolve_weights_dtype("bfloat16", jnp.float32) == "bfloat16"  # asked for, so given
    with pytest.raises(UserError, match="sampling.weights_dtype"):
        resolve_weights_dtype("fp8", jnp.float32)
    with pytest.raises(ConfigError, match="sampling.weights_dtype"):
        SamplingConfig(weights_dtype="fp8")


@pytest.mark.parametrize("flags,want", [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                         ("fpu avx2 amx_bf16 amx_tile", True), ("fpu sse2 avx2 avx512f", False)])
def test_native_bfloat16_reads_the_cpu_flags(monkeypatch, tmp_path, flags, want):
    import builtins

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(info if f == "/proc/cpuinfo" else f, *a, **k))
    assert jax.default_backend() == "cpu"
    assert native_bfloat16() is want


# ----------------------------------------------------------------------------- SmolLM2 against transformers


@pytest.fixture(scope="module")
def smollm(smollm_and_transformers):
    ours, tok, _, ref, torch = smollm_and_transformers
    return ours, tok, ref, torch


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.llm
def test_smollm2_bfloat16_copy_within_the_stated_tolerance_of_transformers(smollm):
    from cenas_jax.search.prompts import TEMPLATE_DIR

    ours, tok, ref, torch = smollm
    s = Sampler(ours, tok, weights_dtype="bfloat16")
    narrow = nnx.merge(*s._split())
    text = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n' + (TEMPLATE_DIR / "contract.txt").read_text()
    ids = tok(text, add_special_tokens=False)["input_ids"][:400]
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits.numpy()[0].astype(np.float64)
    got = np.asarray(narrow(jnp.asarray([ids])))[0].astype(np.float64)
    assert np.max(np.abs(got - want)) <= 2e-2 * np.max(np.abs(want))
    lw, lg = _log_softmax(want), _log_softmax(got)
    kl = (np.exp(lw) * (lw - lg)).sum(-1)
    assert kl.mean() <= 1e-3 and kl.max() <= 1e-2
    assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.98
    prompt = "Write a Python function that returns the squares of a list of numbers, with a docstring."
    [c] = s.generate([prompt], chat=True, max_new_tokens=40, temperature=0.0)
    p_ids = s.encode([prompt], chat=True)[0]
    with torch.no_grad():
        out = ref.generate(torch.tensor([p_ids]), attention_mask=torch.ones(1, len(p_ids), dtype=torch.long),
                           do_sample=False, max_new_tokens=40, pad_token_id=tok.pad_token_id)
    assert list(c.token_ids) == out[0, len(p_ids):].tolist()
