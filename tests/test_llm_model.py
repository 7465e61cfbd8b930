"""The NNX decoder against transformers' PyTorch models (fixed tolerances, never loosened).

Tiny random Llama / Qwen2 checkpoints are written with ``save_pretrained`` and
read back by our loader; SmolLM2-135M is read from the embedded GGUF file by
both sides.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.errors import UserError
from cenas_jax.llm.model import Llama, LlamaConfig, rope_inv_freq
from cenas_jax.llm.weights import load_model, resolve_model_path, unpermute_qk

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REL_TOL = 1e-4  # max |ours - torch| / max |torch| on tiny fp32 models
GGUF_TOL = 1e-3  # the same, SmolLM2 from GGUF


def _save_tiny(path, kind: str):
    """A tiny random HF checkpoint of ``kind`` in ``path``; returns the torch model (eval mode)."""
    torch.manual_seed({"llama3": 0, "qwen2": 1, "tied": 2}[kind])
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=False)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif kind == "llama3":  # GQA, untied, llama3 rope scaling with a short original context
        cfg = transformers.LlamaConfig(
            **common, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=50000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
        model = transformers.LlamaForCausalLM(cfg)
    else:  # tied embeddings, plain multi-head attention
        cfg = transformers.LlamaConfig(**common, num_key_value_heads=8, tie_word_embeddings=True)
        model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up of them shows
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.copy_(1.0 + 0.5 * torch.randn_like(p) if "norm" in name else torch.randn_like(p))
    model.eval()
    # Several shards (with an index json) for the llama3 case exercise the sharded reader.
    model.save_pretrained(path, max_shard_size="100KB" if kind == "llama3" else "1GB")
    return model


@pytest.fixture(scope="module", params=["llama3", "qwen2", "tied"])
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    ref = _save_tiny(path, request.param)
    model, tok, config = load_model(path, dtype="float32", tokenizer=False)
    return request.param, path, ref, model, config


def _rel_err(ours, ref):
    return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def test_tiny_logits_match_transformers(tiny):
    kind, path, ref, model, config = tiny
    if kind == "llama3":
        assert config.rope_type == "llama3" and config.num_kv_heads == 2 and not config.tie_word_embeddings
        assert (path / "model.safetensors.index.json").exists()
    if kind == "qwen2":
        assert config.attention_bias
    if kind == "tied":
        assert config.tie_word_embeddings and model.lm_head is None
    tokens = np.random.RandomState(0).randint(0, 96, (3, 40))  # 40 > 16 reaches the llama3-scaled band
    with torch.no_grad():
        want = ref(torch.tensor(tokens)).logits.numpy()
    got = model(jnp.asarray(tokens))
    assert got.dtype == jnp.float32 and got.shape == (3, 40, 96)
    assert _rel_err(got, want) <= REL_TOL


def test_kv_cache_extend_equals_full_pass(tiny):
    _, _, _, model, _ = tiny
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, 96, (2, 12)))
    full = np.asarray(model(tokens))
    cache = model.init_cache(2, 16)
    mask = jnp.zeros((2, 16), bool).at[:, :12].set(True)
    pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
    first, cache = model.extend(tokens[:, :7], pos[:, :7], cache, 0, mask)
    parts = [np.asarray(first)]
    for i in range(7, 12):  # one token at a time, as decoding does
        step, cache = model.extend(tokens[:, i:i + 1], pos[:, i:i + 1], cache, i, mask)
        parts.append(np.asarray(step))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=1e-5 * np.abs(full).max())


def test_held_prompts_extend_equals_full_pass(tiny):
    """Rows decoding from prompts held once (``SharedPrompt``) get the logits of a full pass over prompt + tokens."""
    from cenas_jax.llm.model import SharedPrompt

    _, _, _, model, _ = tiny
    rs = np.random.RandomState(3)
    prompts = jnp.asarray(rs.randint(0, 96, (2, 8)))  # two prompts of 8 tokens
    rows = [1, 0, 1]  # three rows: row 0 and row 2 continue prompt 1, row 1 prompt 0
    tails = jnp.asarray(rs.randint(0, 96, (3, 4)))  # each row's own 4 tokens
    full = np.asarray(model(jnp.concatenate([prompts[jnp.asarray(rows)], tails], axis=1)))[:, 8:]
    held = model.init_cache(2, 8)
    _, held = model.extend(prompts, jnp.broadcast_to(jnp.arange(8), (2, 8)), held, 0, jnp.ones((2, 8), bool))
    shared = SharedPrompt(held.k, held.v, jnp.ones((2, 8), bool), jnp.asarray([[1, 1], [0, 2]]),
                          jnp.asarray([1, 0, 1]), jnp.asarray([0, 0, 1]))
    cache, mask = model.init_cache(3, 6), jnp.zeros((3, 6), bool)
    parts = []
    for i in range(4):  # one token at a time, as decoding does
        mask = mask.at[:, i].set(True)
        step, cache = model.extend(tails[:, i:i + 1], jnp.full((3, 1), 8 + i), cache, i, mask, shared=shared)
        parts.append(np.asarray(step))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=1e-5 * np.abs(full).max())


def test_padding_right_and_left(tiny):
    _, _, _, model, _ = tiny
    rs = np.random.RandomState(2)
    short, long = rs.randint(0, 96, 5), rs.randint(0, 96, 9)
    alone = [np.asarray(model(jnp.asarray(s[None])))[0] for s in (short, long)]
    # Right padding: the causal mask alone keeps the short row exact.
    right = np.stack([np.concatenate([short, np.zeros(4, int)]), long])
    out = np.asarray(model(jnp.asarray(right)))
    np.testing.assert_allclose(out[0, :5], alone[0], atol=1e-5 * np.abs(alone[0]).max())
    np.testing.assert_allclose(out[1], alone[1], atol=1e-5 * np.abs(alone[1]).max())
    # Left padding: positions restart at the first real token, pad keys are masked.
    left = jnp.asarray(np.stack([np.concatenate([np.zeros(4, int), short]), long]))
    pos = jnp.asarray(np.stack([np.r_[np.zeros(4, int), np.arange(5)], np.arange(9)]))
    mask = jnp.asarray(np.stack([np.r_[np.zeros(4, bool), np.ones(5, bool)], np.ones(9, bool)]))
    out = np.asarray(model(left, pos, mask))
    np.testing.assert_allclose(out[0, 4:], alone[0], atol=1e-5 * np.abs(alone[0]).max())


def test_projection_names_for_lora(tiny):
    _, _, _, model, config = tiny
    from flax import nnx

    attn, mlp = model.layers[0].attn, model.layers[config.num_layers - 1].mlp
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert isinstance(getattr(attn, name), nnx.Linear)
    for name in ("gate_proj", "up_proj", "down_proj"):
        assert isinstance(getattr(mlp, name), nnx.Linear)
    assert attn.q_proj.kernel.get_metadata()["out_sharding"] == ("embed", "heads")


def test_from_hf_dict_old_rope_layout_and_linear_scaling():
    d = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
             num_attention_heads=2, rope_theta=1000.0, rope_scaling={"type": "linear", "factor": 4.0},
             eos_token_id=[3, 4])
    c = LlamaConfig.from_hf_dict(d)
    assert c.rope_theta == 1000.0 and c.rope_type == "linear" and c.eos_token_ids == (3, 4)
    assert c.num_kv_heads == 2 and c.head_dim == 4
    plain = 1.0 / 1000.0 ** (np.arange(0, 4, 2) / 4)
    np.testing.assert_allclose(rope_inv_freq(c), plain / 4.0, rtol=1e-6)
    hash(c)  # static under jit: must hash
    with pytest.raises(ValueError, match="model_type"):
        LlamaConfig.from_hf_dict({**d, "model_type": "gpt2"})


def test_gguf_qk_unpermute_inverts_llama_cpp_permutation():
    heads, head_dim, din = 3, 8, 5
    w = np.random.RandomState(0).randn(heads * head_dim, din)
    # llama.cpp's converter: per head, rows (first half, second half) -> interleaved pairs.
    permuted = w.reshape(heads, 2, head_dim // 2, din).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(unpermute_qk(permuted, heads), w)


def test_missing_model_errors_say_where(tmp_path):
    with pytest.raises(UserError, match="not found.*smollm2-135m"):
        resolve_model_path(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="config.json"):
        resolve_model_path(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps(dict(
        vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)))
    with pytest.raises(UserError, match="no safetensors"):
        load_model(tmp_path / "d", tokenizer=False)
    (tmp_path / "x.bin").write_text("x")
    with pytest.raises(UserError, match="not a .gguf"):
        resolve_model_path(tmp_path / "x.bin")


def test_missing_tensor_is_named(tmp_path):
    from cenas_jax.llm.weights import build_model

    c = LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, head_dim=4, tie_word_embeddings=True)
    src = Llama(c)
    tensors = {"model.embed_tokens.weight": np.asarray(src.embed_tokens.embedding[...])}
    with pytest.raises(UserError, match="model.norm.weight"):
        build_model(c, tensors)


# ----------------------------------------------------------------------------- SmolLM2 from GGUF

PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


@pytest.fixture(scope="module")
def smollm(smollm_and_transformers):
    ours, tok, config, ref, _ = smollm_and_transformers
    return ours, tok, config, ref


@pytest.mark.llm
def test_smollm2_logits_match_transformers(smollm):
    ours, tok, config, ref = smollm
    assert (config.num_layers, config.num_heads, config.num_kv_heads, config.tie_word_embeddings) == (30, 9, 3, True)
    ids = tok(PROMPT)["input_ids"]
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits.numpy()[0]
    got = np.asarray(ours(jnp.asarray([ids])))[0]
    assert np.max(np.abs(got - want)) <= GGUF_TOL * np.max(np.abs(want))
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.llm
def test_smollm2_greedy_40_tokens_match_transformers(smollm):
    from cenas_jax.llm.sampler import Sampler

    ours, tok, _, ref = smollm
    sampler = Sampler(ours, tok)
    prompt = "Write a Python function that returns the squares of a list of numbers, with a docstring."
    [c] = sampler.generate([prompt], chat=True, max_new_tokens=40, temperature=0.0)
    ids = sampler.encode([prompt], chat=True)[0]
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           do_sample=False, max_new_tokens=40, pad_token_id=tok.pad_token_id)
    want = out[0, len(ids):].tolist()
    assert c.num_tokens == 40 and c.finish_reason == "length"
    assert list(c.token_ids) == want


# ----------------------------------------------------------------------------- CLI


def _save_char_tokenizer(path, vocab_size=96):
    """A character-level fast tokenizer with a chat template, saved next to a tiny checkpoint."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 32 + vocab_size - 3)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{ch: 3 + i for i, ch in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                               eos_token="</s>")
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_cli")
    _save_tiny(path, "tied")
    _save_char_tokenizer(path)
    return path


def test_cli_logits_and_generate(tiny_dir, tmp_path, capsys):
    from cenas_jax.cli import main

    out = tmp_path / "logits.npy"
    assert main(["llm", "logits", "--model", str(tiny_dir), "--prompt", "hello there", "--out", str(out)]) == 0
    got = np.load(out)
    model, tok, _ = load_model(tiny_dir, dtype="float32")
    ids = tok("hello there")["input_ids"]
    assert ids[-1] == 3 + ord("e") - 32  # raw text, no chat template
    want = np.asarray(model(jnp.asarray([ids])))[0, -1]
    assert got.dtype == np.float32 and got.shape == (96,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())

    capsys.readouterr()
    assert main(["llm", "generate", "--model", str(tiny_dir), "--prompt", "hi", "--batch", "2", "--greedy",
                 "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("--- completion") == 2
    blocks = printed.split("--- completion")[1:]
    assert blocks[0].split("\n", 1)[1] == blocks[1].split("\n", 1)[1]  # greedy: both rows alike


def test_cli_missing_model_is_one_line_error(tmp_path, capsys):
    from cenas_jax.cli import main

    assert main(["llm", "logits", "--model", str(tmp_path / "absent"), "--prompt", "x",
                 "--out", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path / "absent") in err
