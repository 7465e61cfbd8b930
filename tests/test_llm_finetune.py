"""The CE update: sequence-level loss against a numpy reference, accumulation, schedule, Theorem 1, checkpoints."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cenas_jax.config import FinetuneConfig, LoRAConfig
from cenas_jax.errors import UserError
from cenas_jax.llm import finetune as ft
from cenas_jax.llm.checkpoint import read_metadata, restore_checkpoint, save_checkpoint
from cenas_jax.llm.lora import apply_lora
from cenas_jax.llm.model import Llama, LlamaConfig

TINY = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8
)
LORA = LoRAConfig(rank=4, alpha=8.0)
# Programs of different lengths (completion ends with EOS = 2), prompts of different lengths.
PAIRS = [
    ([1, 5, 9], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 2]),
    ([1, 7], [30, 31, 2]),
    ([1, 4, 4, 4, 8], [40, 41, 42, 43, 44, 45, 2]),
    ([1, 6], [50, 2]),
]
_ADAPTED = {}


def _tiny_llama(seed):
    """A random tiny Llama with its arrays drawn in numpy (eager JAX init is slow on a busy CPU).

    The output head is drawn with std 0.4, not 0.02: the usual init gives near-uniform outputs
    (logit std ~0.1) that adapters on inner projections can hardly move, unlike a trained model.
    """
    model = nnx.eval_shape(lambda: Llama(TINY, rngs=nnx.Rngs(0)))
    state = nnx.state(model)
    rng = np.random.default_rng(seed)

    def init(path, x):
        if path[-1].key == "weight":  # RMSNorm scales
            return jnp.ones(x.shape, x.dtype)
        std = 0.4 if path[0].key == "lm_head" else 0.02
        return jnp.asarray(rng.normal(0.0, std, x.shape), x.dtype)

    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(init, nnx.to_pure_dict(state)))
    nnx.update(model, state)
    return model


def _adapted(seed=0, lora=LORA, randomise=False):
    """A copy of a cached tiny random Llama with adapters (B = 0, or random if ``randomise``)."""
    if (seed, lora) not in _ADAPTED:
        model = _tiny_llama(seed)
        apply_lora(model, lora, nnx.Rngs(1))
        _ADAPTED[(seed, lora)] = model
    model = nnx.clone(_ADAPTED[(seed, lora)])
    if randomise:  # non-zero B so that lora_a gets gradients too
        state = nnx.state(model, nnx.LoRAParam)
        leaves, treedef = jax.tree.flatten(state)
        rng = np.random.default_rng(7)
        nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(0.05 * rng.normal(size=x.shape), x.dtype)
                                                       for x in leaves]))
    return model


@nnx.jit
def _logits(model, tokens):
    return model(tokens)


def _reference_logprobs(model, pairs, width=16):
    """Per pair, sum of completion-token log-probs computed in float64 numpy from the model's logits.

    One right-padded batch (the model is causal, so padding after a row's tokens cannot reach them).
    """
    seqs = [np.asarray(list(p) + list(c), np.int32) for p, c in pairs]
    tokens = np.zeros((len(seqs), width), np.int32)
    for r, ids in enumerate(seqs):
        tokens[r, : len(ids) - 1] = ids[:-1]
    logits = np.asarray(_logits(model, tokens), np.float64)
    out = []
    for r, ((prompt, _), ids) in enumerate(zip(pairs, seqs)):
        logp = logits[r] - logits[r].max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        pos = np.arange(len(prompt) - 1, len(ids) - 1)
        out.append(logp[pos, ids[pos + 1]].sum())
    return np.array(out)


def _cfg(**kw):
    base = dict(learning_rate=2e-2, epochs=100.0, max_steps=4, batch_size=4, warmup_steps=1, max_grad_norm=1.0)
    base.update(kw)
    return FinetuneConfig(**base)


def _frozen(model):
    return {k: np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(
        nnx.to_pure_dict(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))))[0]}


def _adapters(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))]


def test_sequence_logprobs_match_numpy_reference_and_ignore_batching():
    model = _adapted(randomise=True)
    ref = _reference_logprobs(model, PAIRS)
    np.testing.assert_allclose(ft.sequence_logprobs(model, PAIRS, batch_size=4), ref, rtol=1e-5)
    # Different batch compositions (other padding) give the same numbers.
    np.testing.assert_allclose(ft.sequence_logprobs(model, PAIRS, batch_size=2), ref, rtol=1e-5)


def test_sequence_and_token_mean_losses_match_their_definitions():
    model = _adapted(randomise=True)
    nll = -_reference_logprobs(model, PAIRS)
    n_tokens = np.array([len(c) for _, c in PAIRS])
    seq_loss, _ = ft.loss_and_grads(model, PAIRS, _cfg(normalization="sequence"))
    tok_loss, _ = ft.loss_and_grads(model, PAIRS, _cfg(normalization="token_mean"))
    assert seq_loss == pytest.approx(nll.mean(), rel=1e-5)  # the CE update: mean over programs
    assert tok_loss == pytest.approx(nll.sum() / n_tokens.sum(), rel=1e-5)  # usual SFT: mean over tokens
    # On programs of different lengths the two differ by about the mean length.
    assert seq_loss / tok_loss == pytest.approx(nll.mean() * n_tokens.sum() / nll.sum(), rel=1e-5)
    assert seq_loss > 3 * tok_loss
    # finetune's first reported loss (all pairs in one step, before any update) is the same number.
    result = ft.finetune(model, PAIRS, _cfg(max_steps=1))
    assert result.losses[0] == pytest.approx(seq_loss, rel=1e-5)


def test_grad_accumulation_of_two_micro_batches_equals_one_batch():
    model = _adapted(randomise=True)
    pairs = PAIRS[:2]
    for norm in ("sequence", "token_mean"):
        loss1, g1 = ft.loss_and_grads(model, pairs, _cfg(batch_size=2, grad_accum=1, normalization=norm))
        loss2, g2 = ft.loss_and_grads(model, pairs, _cfg(batch_size=2, grad_accum=2, normalization=norm))
        assert loss2 == pytest.approx(loss1, rel=1e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
        assert max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(g1)) > 1e-3


def test_warmup_cosine_schedule_values():
    cfg = _cfg(learning_rate=1e-3, warmup_steps=4)
    sched = ft.learning_rate_schedule(cfg, num_steps=20)
    got = np.array([float(sched(i)) for i in range(20)])
    want = []
    for i in range(20):
        t = i + 1
        if t <= 4:
            want.append(1e-3 * t / 4)
        else:
            want.append(1e-3 * 0.5 * (1 + math.cos(math.pi * (t - 4) / (21 - 4))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    assert got.argmax() == 3 and got[-1] > 0 and got[0] > 0
    # Edge cases: no warm-up starts on the cosine; warm-up longer than the run is cut to it.
    no_warmup = ft.learning_rate_schedule(_cfg(learning_rate=1.0, warmup_steps=0), num_steps=5)
    np.testing.assert_allclose([float(no_warmup(i)) for i in range(5)],
                               [0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(1, 6)], rtol=1e-5)
    long_warmup = ft.learning_rate_schedule(_cfg(learning_rate=1.0, warmup_steps=10), num_steps=3)
    np.testing.assert_allclose([float(long_warmup(i)) for i in range(3)], [1 / 3, 2 / 3, 1.0], rtol=1e-5)
    assert ft.num_steps_for(10, FinetuneConfig(epochs=2.5, batch_size=4)) == 8  # ceil(2.5 * 3)
    assert ft.num_steps_for(10, FinetuneConfig(epochs=2.5, batch_size=4, max_steps=5)) == 5


def test_theorem1_small_case_likelihood_rises_and_base_is_untouched():
    model = _adapted()
    frozen_before = _frozen(model)
    before = ft.sequence_logprobs(model, PAIRS, batch_size=4)
    result = ft.finetune(model, PAIRS, _cfg(learning_rate=3e-2, max_steps=25, batch_size=2, warmup_steps=2))
    after = ft.sequence_logprobs(model, PAIRS, batch_size=4)
    # The mean sequence log-likelihood of the fine-tuned programs rises clearly (nats per program).
    assert after.mean() > before.mean() + 5.0, (before, after)
    assert result.losses[-1] < result.losses[0]
    # The base weights are bit-identical; only adapters moved.
    frozen_after = _frozen(model)
    assert frozen_after.keys() == frozen_before.keys()
    assert all(np.array_equal(frozen_before[k], frozen_after[k]) for k in frozen_before)
    assert any(np.any(b) for b in _adapters(model))
    # The report adds up: 25 steps of 2 rows, tokens = real inputs (prompt + completion - 1).
    assert result.steps == 25 and len(result.losses) == 25 and len(result.learning_rates) == 25
    assert len(result.grad_norms) == 25 and all(g > 0 for g in result.grad_norms)
    n_inputs = [len(p) + len(c) - 1 for p, c in PAIRS]
    assert result.tokens in range(25 * 2 * min(n_inputs), 25 * 2 * max(n_inputs) + 1)
    assert result.tokens_per_s == pytest.approx(result.tokens / result.seconds)
    assert result.truncated == 0
    # The optimiser's last learning rate is the schedule's last value.
    assert float(ft._hyperparams(result.optimizer)["learning_rate"][...]) == pytest.approx(result.learning_rates[-1])


def test_finetune_is_deterministic_and_compiles_once_per_shape():
    cfg = _cfg(max_steps=3, batch_size=2, grad_accum=2)
    m1, m2 = _adapted(), _adapted()
    graphdef = nnx.split((nnx.view(m1, deterministic=False, raise_if_not_found=False), ft.make_optimizer(m1, cfg)),
                         nnx.Any(nnx.LoRAParam, nnx.OptState), ...)[0]
    step = ft._compiled_train_step(graphdef, 0)
    compiled_before = step._cache_size()
    r1 = ft.finetune(m1, PAIRS, cfg)
    compiled_after_first = step._cache_size()
    r2 = ft.finetune(m2, PAIRS, cfg)
    assert r1.losses == r2.losses
    assert all(np.array_equal(a, b) for a, b in zip(_adapters(m1), _adapters(m2)))
    # All pairs pad to one length: at most one new compilation, and none for the second call
    # (fresh optimiser, same structure: the CE loop does not recompile every cycle).
    assert {ft.bucket_length(len(p) + len(c) - 1, cfg.max_seq_len) for p, c in PAIRS} == {16}
    assert compiled_after_first - compiled_before <= 1
    assert step._cache_size() == compiled_after_first


def test_frozen_layer_cache_gives_the_same_losses_and_adapters():
    top = LoRAConfig(rank=4, alpha=8.0, layers=(-1,))  # adapters in layer 2 of 3: layers 0-1 are frozen
    cfg = _cfg(max_steps=4, batch_size=2, grad_accum=2)  # 4 steps x 2 rows over 4 pairs: each pair twice
    m_plain, m_cached = _adapted(lora=top, randomise=True), _adapted(lora=top, randomise=True)
    assert ft.first_adapted_layer(m_plain) == 2
    plain = ft.finetune(m_plain, PAIRS, cfg, cache_frozen=False)
    cached = ft.finetune(m_cached, PAIRS, cfg)  # auto: on, since pairs repeat
    assert (plain.cached_layers, cached.cached_layers) == (0, 2)
    np.testing.assert_allclose(cached.losses, plain.losses, rtol=1e-5)
    np.testing.assert_allclose(cached.grad_norms, plain.grad_norms, rtol=1e-4)
    for a, b in zip(_adapters(m_cached), _adapters(m_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert cached.tokens == plain.tokens
    # One pass over the pairs: nothing to reuse, so no cache.
    assert ft.finetune(_adapted(lora=top), PAIRS, _cfg(max_steps=2, batch_size=2)).cached_layers == 0
    # Adapters everywhere: nothing frozen below them.
    assert ft.finetune(_adapted(), PAIRS, cfg).cached_layers == 0


def test_dropout_training_is_deterministic_for_a_seed():
    lora = LoRAConfig(rank=4, alpha=8.0, dropout=0.3)
    m1, m2 = _adapted(lora=lora), _adapted(lora=lora)
    # (max_grad_norm=0: the no-clipping path, compiled here anyway for the dropout graph.)
    r1 = ft.finetune(m1, PAIRS, _cfg(max_steps=2, seed=5, max_grad_norm=0.0))
    r2 = ft.finetune(m2, PAIRS, _cfg(max_steps=2, seed=5, max_grad_norm=0.0))
    assert r1.losses == r2.losses
    m3 = _adapted(lora=lora)
    ft.finetune(m3, PAIRS, _cfg(max_steps=2, seed=6, max_grad_norm=0.0))
    assert not all(np.array_equal(a, b) for a, b in zip(_adapters(m1), _adapters(m3)))


def test_truncation_and_bad_pairs():
    model = _adapted()
    long_pair = ([1, 2, 3], list(range(10, 40)) + [2])
    result = ft.finetune(model, [long_pair, PAIRS[1]], _cfg(max_steps=1, batch_size=2, max_seq_len=16))
    assert result.truncated == 1
    with pytest.raises(UserError, match="pair 0: the prompt has 16 tokens"):
        ft.finetune(model, [(list(range(1, 17)), [2])], _cfg(max_seq_len=16))
    with pytest.raises(UserError, match="pair 1: the completion is empty"):
        ft.finetune(model, [PAIRS[0], ([1, 2], [])], _cfg())
    with pytest.raises(UserError, match="no LoRA adapters"):
        ft.finetune(_tiny_llama(0), PAIRS, _cfg())
    assert [ft.bucket_length(n, 4096) for n in (1, 16, 17, 25, 33, 49, 65, 100)] == [16, 16, 24, 32, 48, 64, 96, 128]
    assert ft.bucket_length(3000, 2048) == 2048


def test_checkpoint_round_trip_restores_identical_logits_and_optimizer(tmp_path):
    cfg = _cfg(max_steps=3, batch_size=2)
    model = _adapted()
    result = ft.finetune(model, PAIRS, cfg)
    path = save_checkpoint(tmp_path / "ckpt", model, result.optimizer, {"cycle": 7, "note": "elites"})
    assert read_metadata(path)["metadata"] == {"cycle": 7, "note": "elites"}

    fresh = _adapted()
    optimizer = ft.make_optimizer(fresh, cfg)
    assert restore_checkpoint(path, fresh, optimizer) == {"cycle": 7, "note": "elites"}
    tokens = (np.arange(64).reshape(4, 16) * 5 % 64).astype(np.int32)
    assert np.array_equal(np.asarray(_logits(fresh, tokens)), np.asarray(_logits(model, tokens)))
    saved = jax.tree.leaves(nnx.to_pure_dict(nnx.state(result.optimizer)))
    loaded = jax.tree.leaves(nnx.to_pure_dict(nnx.state(optimizer)))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(saved, loaded))
    # Continuing from the restored optimiser takes the same step as continuing the original.
    more = _cfg(max_steps=1, batch_size=2, seed=1)
    ft.finetune(model, PAIRS, more, optimizer=result.optimizer)
    ft.finetune(fresh, PAIRS, more, optimizer=optimizer)
    assert all(np.array_equal(a, b) for a, b in zip(_adapters(model), _adapters(fresh)))

    with pytest.raises(UserError, match="already exists"):
        save_checkpoint(path, model)


def test_checkpoint_errors_name_the_path(tmp_path):
    model = _adapted()
    path = save_checkpoint(tmp_path / "ckpt", model, None, {})
    other = _adapted(lora=LoRAConfig(rank=2, alpha=8.0))
    with pytest.raises(UserError, match=f"{path}.*does not match"):
        restore_checkpoint(path, other)
    with pytest.raises(UserError, match="holds no optimiser state"):
        restore_checkpoint(path, _adapted(), ft.make_optimizer(model, _cfg()))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "adapters").write_text("not a checkpoint")
    with pytest.raises(UserError, match=f"{junk}.*unreadable"):
        restore_checkpoint(junk, model)
    with pytest.raises(UserError, match="does not exist"):
        restore_checkpoint(tmp_path / "nowhere", model)


@pytest.mark.llm
def test_smollm2_few_steps_raise_the_likelihood_of_two_programs():
    from cenas_jax.llm.weights import load_model

    model, tok, config = load_model("smollm2-135m", dtype="float32")
    eos = config.eos_token_ids[0] if config.eos_token_ids else tok.eos_token_id
    texts = [
        ("Write a Flax MLP.\n", "class Net(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n        return nn.Dense(10)(x)\n"),
        ("Write a Flax CNN.\n", "class Net(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n        return nn.Conv(8, (3, 3))(x)\n"),
    ]
    pairs = [(tok.encode(p), tok.encode(c, add_special_tokens=False) + [eos]) for p, c in texts]
    # Adapters on the top two layers only: the backward pass stops there, which keeps this test short.
    apply_lora(model, LoRAConfig(rank=8, alpha=16.0, layers=(-2, -1)), nnx.Rngs(0))
    frozen_before = _frozen(model)
    before = ft.sequence_logprobs(model, pairs, batch_size=2)
    result = ft.finetune(model, pairs, FinetuneConfig(learning_rate=2e-3, max_steps=6, batch_size=2, warmup_steps=1))
    after = ft.sequence_logprobs(model, pairs, batch_size=2)
    assert after.mean() > before.mean() + 2.0, (before, after, result.losses)
    assert result.losses[-1] < result.losses[0]
    frozen_after = _frozen(model)
    assert all(np.array_equal(frozen_before[k], frozen_after[k]) for k in frozen_before)


def test_impossible_lora_and_finetune_settings_are_config_errors():
    from cenas_jax.config import ConfigError

    for bad in (dict(max_steps=0), dict(warmup_steps=-1), dict(weight_decay=-0.1), dict(max_seq_len=1),
                dict(max_grad_norm=-1.0)):
        with pytest.raises(ConfigError, match="finetune." + next(iter(bad))):
            FinetuneConfig(**bad)
    with pytest.raises(ConfigError, match="lora.alpha"):
        LoRAConfig(alpha=0.0)
    with pytest.raises(ConfigError, match="lora.targets"):
        LoRAConfig(targets=())


_SHARDED_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, sys.argv[1])
import numpy as np
import jax, jax.numpy as jnp
from flax import nnx
from cenas_jax.config import FinetuneConfig, LoRAConfig
from cenas_jax.llm.finetune import finetune
from cenas_jax.llm.lora import apply_lora
from cenas_jax.llm.model import Llama, LlamaConfig
from cenas_jax.llm.sharding import make_mesh, shard_model

assert jax.device_count() == 4
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8)
pairs = [([1, 5, 9], [11, 12, 13, 14, 2]), ([1, 7], [30, 31, 2]), ([1, 4, 4], [40, 41, 2]), ([1, 6], [50, 2])]
ft = FinetuneConfig(learning_rate=2e-2, max_steps=3, batch_size=4, warmup_steps=1)
runs = []
for sharded in (False, True):
    model = Llama(cfg, rngs=nnx.Rngs(0))
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(1))
    if sharded:
        shard_model(model, make_mesh(data=2, model=2))
    result = finetune(model, pairs, ft)
    a = model.layers[1].mlp.up_proj.lora.lora_b[...]
    runs.append((result.losses, np.asarray(a), len(a.sharding.device_set)))
(l0, a0, n0), (l1, a1, n1) = runs
np.testing.assert_allclose(l1, l0, rtol=1e-5)
np.testing.assert_allclose(a1, a0, rtol=1e-4, atol=1e-6)
assert n0 == 1 and n1 == 4, (n0, n1)
print("OK", l0, l1)
"""


@pytest.mark.slow
def test_sharded_finetune_equals_unsharded_on_four_fake_devices(tmp_path):
    """FSDP/tensor-parallel CE update (DESIGN.md §7): same losses and adapters on a 2x2 mesh of fake CPU devices."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "sharded_finetune.py"
    script.write_text(_SHARDED_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
