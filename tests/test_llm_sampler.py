"""The batched KV-cache sampler on a tiny random decoder with a character tokenizer.

The sampler is tokenizer-agnostic, so a character-level tokenizer keeps these
tests fast and exact; agreement with transformers' greedy decoding on the real
SmolLM2 weights is tested in test_llm_model.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cenas_jax.errors import UserError
from cenas_jax.llm.model import Llama, LlamaConfig
from cenas_jax.llm.sampler import Completion, Sampler, sample_tokens

CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"  # printable ASCII and newline -> ids 3..98
PAD, BOS, EOS = 0, 1, 2


class CharTokenizer:
    """One id per printable character; ``<|user|>``-style chat template in plain text."""

    pad_token_id, eos_token_id = PAD, EOS
    chat_template = "plain"

    def __call__(self, text):
        return {"input_ids": [BOS] + [3 + CHARS.index(ch) for ch in text]}

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + ("<assistant>" if add_generation_prompt else "")
        return self(text)["input_ids"]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(CHARS[i - 3] for i in ids if i >= 3 or not skip_special_tokens)


@pytest.fixture(scope="module")
def model():
    config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, rope_theta=10000.0, tie_word_embeddings=False,
                         max_position_embeddings=512, eos_token_ids=(EOS,))
    m = Llama(config, rngs=nnx.Rngs(0))
    # Larger random weights than the default init so logits are well separated (no argmax ties).
    for _, v in nnx.iter_graph(m):
        if isinstance(v, nnx.Param) and v.ndim == 2:
            v.set_value(v[...] * 20.0)
    return m


@pytest.fixture(scope="module")
def sampler(model):
    # EOS is dropped so greedy runs reach max_new_tokens; EOS tests make their own sampler.
    return Sampler(model, CharTokenizer(), eos_token_ids=())


def _naive_greedy(model, ids, n):
    """Greedy decoding by re-running the full causal pass each step (no cache).

    The sequence is right-padded to a fixed width (harmless under the causal
    mask) so one compiled forward serves every step.
    """
    width = 64
    forward = nnx.jit(lambda m, t: m(t))
    seq = list(ids)
    for _ in range(n):
        padded = jnp.asarray([seq + [PAD] * (width - len(seq))])
        seq.append(int(jnp.argmax(forward(model, padded)[0, len(seq) - 1])))
    return seq[len(ids):]


PROMPTS = ["hi", "a longer prompt, of a different length", "mid size one"]


def test_greedy_batch_equals_naive_full_pass(model, sampler):
    outs = sampler.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=0.0)
    tok = CharTokenizer()
    for p, c in zip(PROMPTS, outs):
        assert isinstance(c, Completion) and c.finish_reason == "length" and c.num_tokens == 12
        want = _naive_greedy(model, tok(p)["input_ids"], 12)
        assert list(c.token_ids) == want
        assert c.text == tok.decode(want)


def test_rows_do_not_depend_on_batch_mates(sampler):
    together = sampler.generate(PROMPTS, chat=True, max_new_tokens=10, temperature=0.0)
    alone = [sampler.generate([p], chat=True, max_new_tokens=10, temperature=0.0)[0] for p in PROMPTS]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]


def test_chat_flag_changes_the_prompt(sampler):
    assert sampler.encode(["x"], chat=True)[0] != sampler.encode(["x"], chat=False)[0]
    assert CharTokenizer().decode(sampler.encode(["x"], chat=True)[0]).startswith("<user>x")


def test_compiles_once_per_bucket(model):
    s = Sampler(model, CharTokenizer(), eos_token_ids=())  # prompt bucket 64, new-token bucket 64
    assert s.compile_counts() == {"prefill": 0, "decode": 0}
    s.generate(["warm"], chat=False, max_new_tokens=8, temperature=0.0)  # bucket (1, 64, 64)
    s.generate(["a", "bb", "c"], chat=False, max_new_tokens=8, temperature=0.0)  # batch 3 -> bucket (4, 64, 64)
    before = s.compile_counts()
    s.generate(["abc", "a much longer prompt of forty characters", "z"], chat=False, max_new_tokens=5,
               temperature=[0.0, 0.9, 0.3], seed=3)
    s.generate(["xyz xyz", "q", "r", "s"], chat=False, max_new_tokens=40, temperature=[1.3, 0.2, 0.0, 1.0], seed=4)
    s.generate(["r"], chat=False, max_new_tokens=20, temperature=0.5)
    assert s.compile_counts() == before, "a call inside an existing (batch, cache length) bucket recompiled"
    s.generate(["a"] * 2, chat=False, max_new_tokens=8, temperature=0.0)  # batch 2: a new bucket
    assert s.compile_counts() == {"prefill": before["prefill"] + 1, "decode": before["decode"] + 1}
    # A second sampler of the same model reuses those compilations: its calls compile nothing.
    other = Sampler(model, CharTokenizer(), eos_token_ids=())
    other.generate(["a"] * 2, chat=False, max_new_tokens=8, temperature=0.0)
    assert other.compile_counts() == {"prefill": 0, "decode": 0} and s.compile_counts()["decode"] == before["decode"] + 1
    s.generate(["q"] * 2, chat=False, max_new_tokens=8, temperature=0.7, top_k=5)  # top_k is static: a new decode
    assert s.compile_counts() == {"prefill": before["prefill"] + 1, "decode": before["decode"] + 2}


def test_seeded_sampling_is_deterministic_and_temperatures_are_per_row(sampler):
    kw = dict(chat=False, max_new_tokens=16, top_k=0, top_p=1.0)
    a = sampler.generate(PROMPTS, temperature=[0.0, 1.0, 1.0], seed=7, **kw)
    b = sampler.generate(PROMPTS, temperature=[0.0, 1.0, 1.0], seed=7, **kw)
    c = sampler.generate(PROMPTS, temperature=[0.0, 1.0, 1.0], seed=8, **kw)
    greedy = sampler.generate(PROMPTS, temperature=0.0, **kw)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert a[0].token_ids == greedy[0].token_ids == c[0].token_ids  # row 0 is greedy
    assert a[1].token_ids != c[1].token_ids  # another seed, another sample
    assert a[1].token_ids != greedy[1].token_ids
    topk1 = sampler.generate(PROMPTS, temperature=1.0, top_k=1, seed=7, chat=False, max_new_tokens=16)
    assert [x.token_ids for x in topk1] == [x.token_ids for x in greedy]


def test_per_row_seeds_make_a_row_independent_of_its_batch(sampler):
    """With a seed per prompt, a sampled row is the same alone, in another batch, or at another position."""
    kw = dict(chat=False, max_new_tokens=16, temperature=1.0)
    together = sampler.generate(PROMPTS, seed=[11, 22, 33], **kw)
    alone = [sampler.generate([p], seed=[s], **kw)[0] for p, s in zip(PROMPTS, [11, 22, 33])]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    swapped = sampler.generate(PROMPTS[::-1], seed=[33, 22, 11], **kw)
    assert [c.token_ids for c in swapped[::-1]] == [c.token_ids for c in together]
    other = sampler.generate(PROMPTS, seed=[11, 22, 34], **kw)
    assert other[:2] == together[:2] and other[2].token_ids != together[2].token_ids
    # The same prompt twice with two seeds: two samples; with one call seed, rows differ too.
    twice = sampler.generate([PROMPTS[0]] * 2, seed=[5, 6], **kw)
    assert twice[0].token_ids != twice[1].token_ids
    shared = sampler.generate([PROMPTS[0]] * 2, seed=5, **kw)
    assert shared[0].token_ids != shared[1].token_ids
    with pytest.raises(UserError, match="one per prompt"):
        sampler.generate(PROMPTS, seed=[1, 2], **kw)
    with pytest.raises(UserError, match="2\\*\\*32"):
        sampler.generate(PROMPTS[:1], seed=[-1], **kw)


def test_eos_ends_a_row(model, sampler):
    base = sampler.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=0.0)
    eos_id = base[1].token_ids[4]  # the 5th token of row 1 becomes "end of sequence"
    s = Sampler(model, CharTokenizer(), eos_token_ids=(eos_id,))
    outs = s.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=0.0)
    for b, o in zip(base, outs):
        if eos_id in b.token_ids:
            k = b.token_ids.index(eos_id)
            assert o.finish_reason == "eos" and o.token_ids == b.token_ids[: k + 1] and o.num_tokens == k + 1
            assert o.text == CharTokenizer().decode(list(b.token_ids[:k]))
        else:
            assert o.finish_reason == "length" and o.token_ids == b.token_ids
    assert outs[1].finish_reason == "eos"
    ignored = s.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=0.0, ignore_eos=True)
    assert [o.token_ids for o in ignored] == [b.token_ids for b in base]


def test_stop_strings(model):
    s = Sampler(model, CharTokenizer(), eos_token_ids=(), stop_check_every=4)
    base = s.generate(PROMPTS, chat=False, max_new_tokens=20, temperature=0.0)
    stop = base[0].text[6:8]  # a 2-character string that row 0 produces at offset 6 (or earlier)
    outs = s.generate(PROMPTS, chat=False, max_new_tokens=20, temperature=0.0, stop=[stop, "never-there"])
    for b, o in zip(base, outs):
        at = b.text.find(stop)
        if at >= 0:
            assert o.finish_reason == "stop" and o.text == b.text[:at]
            tok = CharTokenizer()
            k = next(k for k in range(1, 21) if stop in tok.decode(list(b.token_ids[:k])))
            assert o.token_ids == b.token_ids[:k] and o.num_tokens == k
        else:
            assert o.finish_reason == "length" and o.text == b.text
    assert outs[0].finish_reason == "stop"


def test_bad_arguments_are_user_errors(sampler):
    with pytest.raises(UserError, match="temperature"):
        sampler.generate(["a"], chat=False, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(UserError, match="max_new_tokens"):
        sampler.generate(["a"], chat=False, max_new_tokens=0)
    with pytest.raises(UserError, match="positions"):
        sampler.generate(["a"], chat=False, max_new_tokens=600)
    assert sampler.generate([], chat=False) == []


def _draws(logits, temperature, top_k, top_p, n=4000):
    keys = jax.random.split(jax.random.key(0), n)
    f = jax.jit(jax.vmap(lambda k: sample_tokens(logits[None], k, jnp.array([temperature]), top_k, top_p)[0]))
    return np.bincount(np.asarray(f(keys)), minlength=logits.shape[0]) / n


def test_sample_tokens_distribution_top_k_top_p():
    probs = np.array([0.4, 0.3, 0.2, 0.1, 0.0], np.float32) + 1e-12
    logits = jnp.log(jnp.asarray(probs))
    n = 4000
    tol = 4 * np.sqrt(0.25 / n)  # four standard errors of a frequency
    # top-k 2: renormalised over the best two.
    np.testing.assert_allclose(_draws(logits, 1.0, 2, 1.0)[:2], [4 / 7, 3 / 7], atol=tol)
    assert _draws(logits, 1.0, 2, 1.0)[2:].sum() == 0
    # top-p 0.5: tokens whose better mass is < 0.5 stay -> {0, 1}.
    freq = _draws(logits, 1.0, 0, 0.5)
    np.testing.assert_allclose(freq[:2], [4 / 7, 3 / 7], atol=tol)
    assert freq[2:].sum() == 0
    # temperature 0.5 squares the probabilities (then renormalises).
    sq = probs ** 2 / (probs ** 2).sum()
    np.testing.assert_allclose(_draws(logits, 0.5, 0, 1.0), sq, atol=tol)
    # temperature 0: argmax.
    assert _draws(logits, 0.0, 0, 1.0, n=16)[0] == 1.0


def test_sampler_calls_a_wrapped_model(model):
    """A model whose projections were swapped for other modules still samples (LoRA wraps them so)."""

    class Scaled(nnx.Module):
        def __init__(self, inner, factor):
            self.inner = inner
            self.factor = nnx.Variable(jnp.float32(factor))  # state, so changing it does not recompile

        def __call__(self, x):
            return self.inner(x) * self.factor[...]

    import copy

    wrapped = nnx.clone(model) if hasattr(nnx, "clone") else copy.deepcopy(model)
    for layer in wrapped.layers:
        layer.mlp.down_proj = Scaled(layer.mlp.down_proj, 1.0)  # identity wrapper: same numbers
    s_base = Sampler(model, CharTokenizer(), eos_token_ids=())
    s_wrap = Sampler(wrapped, CharTokenizer(), eos_token_ids=())
    a = s_base.generate(PROMPTS, chat=False, max_new_tokens=8, temperature=0.0)
    b = s_wrap.generate(PROMPTS, chat=False, max_new_tokens=8, temperature=0.0)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    for layer in wrapped.layers:
        layer.mlp.down_proj.factor.set_value(jnp.float32(0.0))  # drops the MLP: different numbers, same sampler
    c = s_wrap.generate(PROMPTS, chat=False, max_new_tokens=8, temperature=0.0)
    assert [x.token_ids for x in c] != [x.token_ids for x in a]


class LineTokenizer(CharTokenizer):
    """Every token decodes to the same line: any generation is a degenerate repeat."""

    def decode(self, ids, skip_special_tokens=True):
        return "same\n" * len(ids)


def test_repeated_lines_end_a_row(model):
    s = Sampler(model, LineTokenizer(), eos_token_ids=(), stop_check_every=4)
    outs = s.generate(PROMPTS, chat=False, max_new_tokens=40, temperature=0.0, max_repeat_lines=5)
    for o in outs:  # checked after 4 and 8 tokens: 8 >= 5 copies, cut to the first copy
        assert o.finish_reason == "repeat" and o.text == "same\n" and o.num_tokens == 1
    plain = s.generate(PROMPTS, chat=False, max_new_tokens=40, temperature=0.0)
    assert all(o.finish_reason == "length" and o.num_tokens == 40 for o in plain)
    with pytest.raises(UserError, match="max_repeat_lines"):
        s.generate(["a"], chat=False, max_new_tokens=4, max_repeat_lines=1)


def test_find_repeat_needs_complete_identical_non_blank_lines(model):
    s = Sampler(model, CharTokenizer(), eos_token_ids=())
    tok = CharTokenizer()
    ids = lambda text: tok(text)["input_ids"][1:]  # noqa: E731 - a one-line local helper
    text, kept, reason = s._find_repeat(ids("x = 1\n  y\n  y\n  y\n"), 3)
    assert (text, reason) == ("x = 1\n  y\n", "repeat") and tok.decode(kept) == "x = 1\n  y\n"
    assert s._find_repeat(ids("x = 1\n  y\n  y\n  y"), 3) is None  # the last line may still grow
    assert s._find_repeat(ids("x = 1\n\n\n\n\n"), 3) is None  # blank lines are not a loop
    assert s._find_repeat(ids("a\nb\na\nb\n"), 3) is None


def test_progress_reports_rows_steps_and_tokens_without_changing_the_samples(model):
    base = Sampler(model, CharTokenizer(), eos_token_ids=(), stop_check_every=4)
    plain = base.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=1.0, seed=3)
    eos_id = plain[1].token_ids[4]
    s = Sampler(model, CharTokenizer(), eos_token_ids=(eos_id,), stop_check_every=4)
    ref = s.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=1.0, seed=3)
    calls = []
    outs = s.generate(PROMPTS, chat=False, max_new_tokens=12, temperature=1.0, seed=3,
                      on_progress=lambda *a: calls.append(a))
    assert [o.token_ids for o in outs] == [o.token_ids for o in ref]  # progress checks change nothing
    steps = [c[1] for c in calls]
    assert steps == sorted(steps) and steps[0] == 4 and steps[-1] == max(o.num_tokens for o in outs)
    rows = [c[0] for c in calls]
    assert rows == sorted(rows) and rows[-1] == len(PROMPTS)
    # tokens: rows that ended count to the check where they were seen done (a multiple of 4), the rest to the step
    ended = [min(-(-o.num_tokens // 4) * 4, 12) for o in outs]
    assert calls[-1][2] == sum(ended)
