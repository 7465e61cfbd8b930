"""Speculative decoding by prompt lookup: exact for greedy rows (token for token), and for sampled rows
the same distribution as plain sampling (a chi-square test against the exact sequence probabilities of
a tiny model)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from test_llm_sampler import EOS, CharTokenizer

from cenas_jax.errors import UserError
from cenas_jax.llm.model import Llama, LlamaConfig
from cenas_jax.llm.sampler import Sampler
from cenas_jax.llm.sampling import filtered_logits
from cenas_jax.llm.speculative import lookup_drafts


def _scaled(model, factor):
    for _, v in nnx.iter_graph(model):
        if isinstance(v, nnx.Param) and v.ndim == 2:
            v.set_value(v[...] * factor)
    return model


@pytest.fixture(scope="module")
def char_model():
    config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=512, eos_token_ids=(EOS,))
    return _scaled(Llama(config, rngs=nnx.Rngs(0)), 20.0)


# Prompts that repeat themselves, so drafts are found and some accepted, of different lengths.
PROMPTS = ["def f(x):\n    return x + 1\ndef f(x):\n", "abcabcabcabc", "hello world", "x = 1\ny = 2\nx = 1\n", "q"]


@pytest.mark.parametrize("k", [1, 4])
def test_greedy_tokens_equal_plain_greedy_decoding(char_model, k):
    plain = Sampler(char_model, CharTokenizer(), eos_token_ids=())
    spec = Sampler(char_model, CharTokenizer(), eos_token_ids=(), speculative_k=k)
    for n in (1, 7, 64, 100):  # 64: the bucket exactly; 100: past it
        want = plain.generate(PROMPTS, chat=False, max_new_tokens=n)
        got = spec.generate(PROMPTS, chat=False, max_new_tokens=n)
        assert got == want
        st = spec.last_speculation
        assert st is not None and st.k == k
        if n > 1:
            assert st.forwards >= 1 and 0 <= st.accepted <= k * st.row_forwards
    # Drafts were accepted (the prompts repeat), so rows took fewer forwards than tokens.
    assert st.accepted > 0 and st.forwards < 100 - 1 and st.tokens_per_forward > 1.0


def test_greedy_with_eos_and_stop_strings_equals_plain(char_model):
    tok = CharTokenizer()
    kw = dict(chat=False, max_new_tokens=60, stop=["\n\n", "zz"], max_repeat_lines=3)
    plain = Sampler(char_model, tok, eos_token_ids=(tok("x")["input_ids"][1],))  # 'x' ends a row
    spec = Sampler(char_model, tok, eos_token_ids=plain.eos_token_ids, speculative_k=3)
    want = plain.generate(PROMPTS, **kw)
    assert {c.finish_reason for c in want} - {"length"}, "the test needs rows that end early"
    assert spec.generate(PROMPTS, **kw) == want


def test_lookup_drafts_copy_the_most_recent_continuation_of_the_longest_match():
    pad = 0
    hist = np.array([
        [pad, pad, 5, 6, 7, 8, 9, 5, 6, 7, 1, 5, 6, 7, 0, 0, 0],  # "5 6 7" seen twice: the later one (then 1) wins
        [pad, 3, 4, 9, 9, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # only "4" matches (n=1): then 9 9 2 4
        [pad, pad, pad, 1, 2, 3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # "1 2" -> 3 1 2 3 ...: the copy goes on periodically
        [pad, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no match: the last token repeated
    ], np.int32)
    length = np.array([14, 7, 8, 4], np.int32)
    start = np.array([2, 1, 3, 1], np.int32)
    draft, found = lookup_drafts(jnp.asarray(hist), jnp.asarray(length), jnp.asarray(start), k=5, max_ngram=3)
    assert np.asarray(found).tolist() == [True, True, True, False]
    assert np.asarray(draft).tolist() == [[1, 5, 6, 7, 1], [9, 9, 2, 4, 9], [3, 1, 2, 3, 1], [9, 9, 9, 9, 9]]
    # Padding before a row's start never matches, even when it equals the row's tokens.
    hist2 = np.array([[4, 4, 4, 1, 4, 0, 0]], np.int32)
    draft2, found2 = lookup_drafts(jnp.asarray(hist2), jnp.asarray([5]), jnp.asarray([3]), k=2, max_ngram=2)
    assert bool(found2[0]) is False and np.asarray(draft2).tolist() == [[4, 4]]


def test_auto_speculates_for_small_batches_only(char_model):
    from cenas_jax.llm.sampler import AUTO_SPECULATION_ROWS, AUTO_SPECULATIVE_K

    plain = Sampler(char_model, CharTokenizer(), eos_token_ids=())
    auto = Sampler(char_model, CharTokenizer(), eos_token_ids=(), speculative_k="auto")
    small = PROMPTS[:AUTO_SPECULATION_ROWS]
    assert auto.generate(small, chat=False, max_new_tokens=40) == plain.generate(small, chat=False, max_new_tokens=40)
    st = auto.last_speculation
    assert st is not None and st.k == AUTO_SPECULATIVE_K and st.accepted > 0
    big = PROMPTS[:AUTO_SPECULATION_ROWS + 1]
    assert auto.generate(big, chat=False, max_new_tokens=40) == plain.generate(big, chat=False, max_new_tokens=40)
    assert auto.last_speculation is None  # not stale: this call did not speculate
    assert [auto.speculative_k_for(n) for n in (1, AUTO_SPECULATION_ROWS, AUTO_SPECULATION_ROWS + 1, 16)] == [
        AUTO_SPECULATIVE_K, AUTO_SPECULATIVE_K, 0, 0]
    assert Sampler(char_model, CharTokenizer(), speculative_k=3).speculative_k_for(16) == 3


def test_speculative_k_in_the_config():
    from cenas_jax.config import ConfigError, SamplingConfig, from_dict

    assert SamplingConfig().speculative_k == "auto"
    assert from_dict(SamplingConfig, {"speculative_k": "auto"}).speculative_k == "auto"
    assert from_dict(SamplingConfig, {"speculative_k": 4}).speculative_k == 4
    for bad in ("fast", 17, -1):
        with pytest.raises(ConfigError, match="speculative_k"):
            from_dict(SamplingConfig, {"speculative_k": bad})


def test_invalid_settings_are_user_errors(char_model):
    with pytest.raises(UserError, match="speculative_k"):
        Sampler(char_model, CharTokenizer(), speculative_k=-1)
    with pytest.raises(UserError, match="speculative_k"):
        Sampler(char_model, CharTokenizer(), speculative_k="fast")
    with pytest.raises(UserError, match="lookup_ngram"):
        Sampler(char_model, CharTokenizer(), speculative_k=2, lookup_ngram=0)


class IdTokenizer:
    """Token ids as text: enough for ``Sampler.generate_ids``."""

    pad_token_id, eos_token_id = 0, None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


V = 6  # a vocabulary small enough to enumerate every 3-token continuation


@pytest.fixture(scope="module")
def tiny_model():
    config = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=1, head_dim=8, max_position_embeddings=64)
    return _scaled(Llama(config, rngs=nnx.Rngs(3)), 4.0)


def _exact_probabilities(model, prompt, n, temperature, top_k, top_p):
    """P(every n-token continuation) under plain sampling: products of the filtered next-token laws."""
    def law(prefix):
        logits = model(jnp.asarray([list(prefix)]))[0, -1][None, :]
        scaled, idx = filtered_logits(logits, jnp.asarray([temperature], jnp.float32), top_k, top_p)
        p = np.zeros(V)
        ids = np.arange(V) if idx is None else np.asarray(idx[0])
        p[ids] = np.asarray(jax.nn.softmax(scaled[0]))
        return p

    probs = {}
    for seq in itertools.product(range(V), repeat=n):
        p = 1.0
        for i in range(n):
            p *= law(list(prompt) + list(seq[:i]))[seq[i]]
            if p == 0:
                break
        probs[seq] = p
    return probs


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (4, 0.9)])
def test_sampled_rows_have_plain_samplings_distribution(tiny_model, top_k, top_p):
    prompt, n, rows, temperature = [1, 2, 3, 1, 2, 3, 1, 2], 3, 12288, 0.8
    exact = _exact_probabilities(tiny_model, prompt, n, temperature, top_k, top_p)
    spec = Sampler(tiny_model, IdTokenizer(), eos_token_ids=(), speculative_k=2, lookup_ngram=2, prompt_bucket=16,
                   new_bucket=8)
    counts: dict[tuple[int, ...], int] = {}
    for chunk in range(rows // 2048):
        seeds = list(range(chunk * 2048, (chunk + 1) * 2048))
        outs = spec.generate_ids([prompt] * 2048, max_new_tokens=n, temperature=temperature, top_k=top_k,
                                 top_p=top_p, seed=seeds)
        for c in outs:
            counts[c.token_ids] = counts.get(c.token_ids, 0) + 1
    st = spec.last_speculation
    # Both branches of the rule ran many times (acceptance, and a draw from the residual after a rejection).
    assert st.accepted >= 200 and st.k * st.row_forwards - st.accepted >= 200, st
    assert all(exact[s] > 0 for s in counts), "a continuation plain sampling cannot produce was produced"
    # Chi-square over the continuations with enough expected mass; the rest pooled into one cell.
    cells = [s for s, p in exact.items() if p * rows >= 5]
    observed = [counts.get(s, 0) for s in cells] + [rows - sum(counts.get(s, 0) for s in cells)]
    expected = [exact[s] * rows for s in cells] + [rows * (1 - sum(exact[s] for s in cells))]
    if expected[-1] < 5:
        observed, expected = observed[:-1], expected[:-1]
        expected = list(np.asarray(expected) * sum(observed) / sum(expected))
    _, pvalue = stats.chisquare(observed, expected)
    assert pvalue > 1e-3, f"speculative samples differ from plain sampling's law (p = {pvalue:.2g})"


# -- the shared-prefix prefill ---------------------------------------------------------------------

HEAD = "You write programs. Follow the contract to the letter, and answer with code only.\n"


@pytest.mark.parametrize("k", [0, 3])
def test_a_shared_prefix_prefilled_once_gives_the_same_tokens(char_model, k):
    prompts = [HEAD + "def f(x):\n    return x + 1\n", HEAD + "abcabc", HEAD + "q", HEAD]
    kw = dict(chat=False, max_new_tokens=40, temperature=[0.0, 0.0, 1.0, 0.0], seed=[1, 2, 3, 4], top_k=20)
    alone = Sampler(char_model, CharTokenizer(), eos_token_ids=(), prompt_bucket=16, share_prefix=False,
                    speculative_k=k)
    shared = Sampler(char_model, CharTokenizer(), eos_token_ids=(), prompt_bucket=16, speculative_k=k)
    want = alone.generate(prompts, **kw)
    got = shared.generate(prompts, **kw)
    assert alone.last_shared_prefix == 0
    # The common prefix is HEAD plus BOS (len(HEAD) + 1 = 83 tokens), cut to whole 16-token buckets.
    assert shared.last_shared_prefix == (len(HEAD) + 1) // 16 * 16 == 80
    assert got == want
    # A single prompt, or prompts without a common bucket, take the plain prefill.
    shared.generate(prompts[:1], **{**kw, "temperature": 0.0, "seed": 0})
    assert shared.last_shared_prefix == 0
    shared.generate(["abc", "xyz"], **{**kw, "temperature": 0.0, "seed": 0})
    assert shared.last_shared_prefix == 0


@pytest.mark.parametrize("k", [0, 3])
def test_rows_with_the_same_prompt_share_one_prefill_row(char_model, k):
    # As a search asks: several answers per parent, parents in any order, with and without a common prefix.
    parents = [HEAD + "def f(x):\n    return x + 1\n", HEAD + "abcabc", HEAD + "q"]
    prompts = [parents[i] for i in (0, 1, 0, 2, 1, 0)]
    kw = dict(chat=False, max_new_tokens=40, temperature=[0.0, 0.0, 1.0, 0.7, 1.0, 0.0], seed=[1, 2, 3, 4, 5, 6],
              top_k=20)
    alone = Sampler(char_model, CharTokenizer(), eos_token_ids=(), prompt_bucket=16, share_prefix=False,
                    speculative_k=k)
    shared = Sampler(char_model, CharTokenizer(), eos_token_ids=(), prompt_bucket=16, speculative_k=k)
    want = alone.generate(prompts, **kw)
    got = shared.generate(prompts, **kw)
    assert alone.last_prefill_rows == 6 and shared.last_prefill_rows == 3
    # Decoding one token a forward, the 3 prompts' keys and values are held once for their rows.
    assert shared.last_held_prompts == (3 if k == 0 else 0) and alone.last_held_prompts == 0
    assert shared.last_shared_prefix == 80
    assert got == want
    # Greedy rows of one prompt give one answer; sampled rows of one prompt draw with their own seeds.
    assert got[0] == got[5] and got[2] != got[0]
    # Every row the same prompt: one prefill row, no common-prefix split.
    same = [parents[1]] * 4
    got = shared.generate(same, **{**kw, "temperature": 1.0, "seed": [7, 8, 9, 10]})
    assert shared.last_prefill_rows == 1 and shared.last_shared_prefix == 0
    assert got == alone.generate(same, **{**kw, "temperature": 1.0, "seed": [7, 8, 9, 10]})
    assert len({c.token_ids for c in got}) > 1
