"""Prompt rendering, template files, character budget, and CE training pairs that round-trip through the parsers."""

import glob
from pathlib import Path

import pytest

from cenas_jax.search import prompts
from cenas_jax.search.delta import apply_edits, extract_code
from cenas_jax.search.prompts import (
    Prompt,
    clean_program,
    delta_completion,
    delta_prompt,
    delta_training_pair,
    full_completion,
    full_prompt,
    full_training_pair,
    template_hash,
    template_overhead,
)

PROG = '''"""Small CNN."""
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(32, (3, 3))(x)
        x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
'''
CHILD = PROG.replace("nn.Conv(32, (3, 3))(x)\n", "nn.Conv(32, (3, 3))(x)\n        x = nn.BatchNorm(use_running_average=not train)(x)\n")

CONTRACT_BITS = [
    "class Net(nn.Module)",
    "num_classes: int = 10",
    "def __call__(self, x, train: bool = False)",
    "(B, H, W, C)",
    "logits (B, num_classes)",
    "use_running_average=not train",
    "deterministic=not train",
    "flax.linen as nn, jax, jax.numpy as jnp, numpy, functools, math, typing, dataclasses",
]


def test_full_prompt_contents():
    p = full_prompt(PROG, score=0.91234, dataset="cifar10", input_shape=(32, 32, 3), num_classes=10)
    assert isinstance(p, Prompt) and p.mode == "full" and p.dataset == "cifar10" and p.edit_format is None
    for bit in CONTRACT_BITS:
        assert bit in p.user, bit
    assert "Dataset: cifar10, inputs 32x32x3, 10 classes." in p.user
    assert "Reference program (validation accuracy 0.912 on cifar10):\n```python\n" + clean_program(PROG).strip("\n") + "\n```" in p.user
    assert "one ```python block" in p.user and "higher accuracy on cifar10" in p.user
    assert "flax.linen" in p.system
    assert p.messages() == [{"role": "system", "content": p.system}, {"role": "user", "content": p.user}]
    assert p.render_plain() == p.system + "\n\n" + p.user + "\n\nAnswer:\n"
    assert p.chars == len(p.system) + len(p.user)


def test_full_prompt_reference_from_another_dataset_and_unscored():
    p = full_prompt(PROG, 0.5, "svhn", reference_dataset="mnist")
    assert "(validation accuracy 0.500 on mnist)" in p.user and "higher accuracy on svhn" in p.user
    p = full_prompt(PROG, None, "digits")
    assert "(accuracy on digits not measured)" in p.user and "Dataset: digits." in p.user


@pytest.mark.parametrize("fmt", ["search_replace", "unified_diff"])
def test_delta_prompt_contents(fmt):
    p = delta_prompt(PROG, score=0.8, dataset="digits", edit_format=fmt)
    assert p.mode == "delta" and p.edit_format == fmt
    for bit in CONTRACT_BITS:
        assert bit in p.user
    assert "Parent program (validation accuracy 0.800 on digits):\n```python\n" + clean_program(PROG).strip("\n") + "\n```" in p.user
    if fmt == "search_replace":
        # The markers are named, with no placeholder line a small model would copy verbatim.
        for mark in ("`<<<<<<< SEARCH`", "`=======`", "`>>>>>>> REPLACE`"):
            assert mark in p.user
        assert "(lines of the parent)" not in p.user
        assert "diff" not in p.user
    else:
        assert "unified diff" in p.user and "```diff" in p.user and "SEARCH" not in p.user


def test_delta_prompt_rejects_unknown_format():
    with pytest.raises(ValueError, match="edit format 'json'"):
        delta_prompt(PROG, 0.5, "digits", "json")


def test_source_with_template_metacharacters_is_shown_verbatim():
    src = PROG + "\nCOST = '$5 {x} ${y} $$'\n"
    assert "COST = '$5 {x} ${y} $$'" in full_prompt(src, 0.1, "d").user
    assert "COST = '$5 {x} ${y} $$'" in delta_prompt(src, 0.1, "d").user
    # CRLF sources are shown with LF line ends.
    assert "\r" not in full_prompt(PROG.replace("\n", "\r\n"), 0.1, "d").user


def test_prompts_stay_compact():
    # Fixed text around the program: small enough for SmolLM2-135M's budget.
    assert template_overhead("full") < 900
    assert template_overhead("delta", "search_replace") < 1000
    assert template_overhead("delta", "unified_diff") < 1000
    # Every corpus program fits a prompt of under 3,500 characters (~1,000 tokens).
    root = Path(prompts.__file__).resolve().parents[1] / "candidates" / "corpus"
    for path in sorted(glob.glob(str(root / "*.py"))) or []:
        src = Path(path).read_text()
        assert full_prompt(src, 0.9, "cifar10", input_shape=(32, 32, 3), num_classes=10).chars < 3500, path
        assert delta_prompt(src, 0.9, "cifar10").chars < 3500, path


def test_full_training_pair_round_trips_through_extract_code():
    prompt, completion = full_training_pair(PROG, CHILD, 0.7, "digits")
    assert prompt == full_prompt(PROG, 0.7, "digits")
    assert completion == full_completion(CHILD) and completion.startswith("```python\n") and completion.endswith("\n```")
    assert extract_code(completion) == clean_program(CHILD)
    assert completion.startswith(prompt.answer_prefix) and completion.endswith(prompt.terminator)
    # What the sampler returns when it stops at the terminator parses to the program too.
    assert extract_code(prompt.answer_prefix + CHILD.rstrip("\n") + prompt.terminator) == CHILD


def test_clean_program_drops_docstrings_comments_and_blank_runs():
    src = (
        '"""Module docstring,\nover two lines."""\n# family: mlp\nimport flax.linen as nn\n\n\n\n'
        "class Net(nn.Module):\n"
        '    """Class docstring."""\n'
        "    # Output width.\n"
        "    num_classes: int = 10  # the classes\n"
        "    tag: str = '# not a comment'\n\n"
        "    def f(self):\n"
        '        """Only a docstring: kept, or the body would be empty."""\n\n'
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        '        """Forward."""\n'
        "        x = nn.Dense(8)(x)  # hidden\n"
        "        return nn.Dense(self.num_classes)(x)\n"
    )
    out = clean_program(src)
    assert out == (
        "import flax.linen as nn\n\n"
        "class Net(nn.Module):\n"
        "    num_classes: int = 10\n"
        "    tag: str = '# not a comment'\n\n"
        "    def f(self):\n"
        '        """Only a docstring: kept, or the body would be empty."""\n\n'
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        x = nn.Dense(8)(x)\n"
        "        return nn.Dense(self.num_classes)(x)\n"
    )
    assert clean_program(out) == out  # idempotent
    bad = "class Net(:\n    # c\n"
    assert clean_program(bad) == bad  # unparsable: unchanged (but for line ends)


def test_answer_frames():
    assert prompts.answer_frame("full") == ("```python\n", "\n```")
    assert prompts.answer_frame("delta", "search_replace") == ("<<<<<<< SEARCH\n", ">>>>>>> REPLACE")
    assert prompts.answer_frame("delta", "unified_diff") == ("```diff\n", "\n```")
    with pytest.raises(ValueError, match="edit format"):
        prompts.answer_frame("delta", None)
    with pytest.raises(ValueError, match="mode"):
        prompts.answer_frame("both")


@pytest.mark.parametrize("fmt", ["search_replace", "unified_diff"])
def test_delta_training_pair_round_trips_through_apply_edits(fmt):
    prompt, completion = delta_training_pair(PROG, CHILD, 0.7, "digits", fmt)
    assert prompt == delta_prompt(PROG, 0.7, "digits", fmt)
    assert apply_edits(clean_program(PROG), completion, fmt) == clean_program(CHILD)
    assert completion == delta_completion(PROG, CHILD, fmt)
    if fmt == "search_replace":
        assert completion.startswith("<<<<<<< SEARCH\n") and completion.endswith(">>>>>>> REPLACE")
    else:
        assert completion.startswith("```diff\n") and completion.endswith("```")
    # The sampler is given the answer prefix and stops at the terminator: training targets start/end there.
    assert completion.startswith(prompt.answer_prefix) and completion.endswith(prompt.terminator.strip("\n"))
    # A local edit, not the whole program again.
    assert "import flax" not in completion and "class Net" not in completion


def test_template_files_and_hash(tmp_path, monkeypatch):
    h = template_hash()
    assert len(h) == 16 and h == template_hash()
    for name in prompts.TEMPLATE_NAMES:
        assert (prompts.TEMPLATE_DIR / f"{name}.txt").is_file()
    # Editing a template changes the hash (the warm-start cache key depends on it).
    for name in prompts.TEMPLATE_NAMES:
        (tmp_path / f"{name}.txt").write_text((prompts.TEMPLATE_DIR / f"{name}.txt").read_text())
    (tmp_path / "full.txt").write_text((tmp_path / "full.txt").read_text() + "\nBe brief.")
    monkeypatch.setattr(prompts, "TEMPLATE_DIR", tmp_path)
    prompts.load_template.cache_clear()
    try:
        assert template_hash() != h
        assert full_prompt(PROG, 0.5, "d").user.endswith("Be brief.")
        (tmp_path / "system.txt").unlink()
        prompts.load_template.cache_clear()
        with pytest.raises(FileNotFoundError, match="prompt template 'system' not found"):
            full_prompt(PROG, 0.5, "d")
    finally:
        monkeypatch.undo()
        prompts.load_template.cache_clear()
    assert template_hash() == h

