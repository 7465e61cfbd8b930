"""Tokenizer and chat template through ``transformers.AutoTokenizer`` (a model directory or a GGUF file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cenas_jax.errors import UserError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(path: str | os.PathLike) -> Any:
    """``AutoTokenizer`` from a HF directory or a ``.gguf`` file; never touches the network.

    Raises ``UserError`` naming the path when no tokenizer is there.
    """
    from transformers import AutoTokenizer

    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
    elif p.is_dir():
        if not any((p / f).exists() for f in _TOKENIZER_FILES):
            raise UserError(f"no tokenizer in {p} (looked for {', '.join(_TOKENIZER_FILES)})")
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    else:
        raise UserError(f"tokenizer path {p} is neither a model directory nor a .gguf file")
    if tok.pad_token_id is None:
        # Padding positions are masked out, so any id works; the EOS id is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool) -> list[int]:
    """Token ids of one prompt: the chat template with a generation prompt when ``chat``, else raw text.

    Raw prompts get the tokenizer's own special tokens (e.g. BOS where the model adds one).
    """
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("this tokenizer has no chat template; use a raw prompt (chat=False / --no-chat)")
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer(prompt)["input_ids"]]
