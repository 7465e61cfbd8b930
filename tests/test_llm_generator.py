"""The real generator p_theta (``LLMGenerator``) on the embedded SmolLM2: answer prefixes, terminators,
per-mode token limits, and the (prompt, completion) token split the CE update trains on."""

from __future__ import annotations

import pytest
from programs import mlp

from cenas_jax.config import LLMConfig, LoRAConfig, SamplingConfig
from cenas_jax.search import prompts
from cenas_jax.search.llm_generator import LLMGenerator

pytestmark = pytest.mark.llm

PROG = mlp(64)
CHILD = PROG.replace("nn.Dense(64)", "nn.Dense(128)")


@pytest.fixture(scope="module")
def gen():
    cfg = LLMConfig(sampling=SamplingConfig(temperature=0.7, max_new_tokens=24, max_new_tokens_delta=6, batch_size=4),
                    lora=LoRAConfig(rank=4, alpha=8, layers=(-1,)))
    return LLMGenerator(cfg, seed=0)


def test_render_ends_with_the_answer_prefix(gen):
    full = prompts.full_prompt(PROG, 0.9, "digits")
    delta = prompts.delta_prompt(PROG, 0.9, "digits", "search_replace")
    assert gen.render(full).endswith("<|im_start|>assistant\n```python\n")
    assert gen.render(delta).endswith("<|im_start|>assistant\n<<<<<<< SEARCH\n")
    assert full.user in gen.render(full) and delta.user in gen.render(delta)


def test_encode_pair_puts_the_prefix_on_the_prompt_side(gen):
    for prompt, completion in (prompts.full_training_pair(PROG, CHILD, 0.9, "digits"),
                               prompts.delta_training_pair(PROG, CHILD, 0.9, "digits", "search_replace")):
        p_ids, c_ids = gen.encode_pair(prompt, completion)
        assert p_ids == gen.tokenizer(gen.render(prompt), add_special_tokens=False)["input_ids"]
        assert c_ids[-1] == gen.tokenizer.eos_token_id
        assert gen.tokenizer.decode(c_ids[:-1]) == completion[len(prompt.answer_prefix):]
        with pytest.raises(ValueError, match="answer prefix"):
            gen.encode_pair(prompt, "no prefix here")


def test_generate_keeps_order_prefixes_and_per_mode_limits(gen):
    ps = [prompts.full_prompt(PROG, 0.9, "digits"), prompts.delta_prompt(PROG, 0.9, "digits"),
          prompts.full_prompt(CHILD, 0.8, "digits"), prompts.delta_prompt(CHILD, 0.8, "digits")]
    out = gen.generate(ps, [0.7] * 4, [3, 4, 5, 6])
    assert len(out) == 4
    for p, g in zip(ps, out):
        assert g.text.startswith(p.answer_prefix)
        limit = 6 if p.mode == "delta" else 24
        assert 1 <= g.num_tokens <= limit and g.finish_reason in ("eos", "stop", "length", "repeat")
        if g.finish_reason == "stop":
            assert g.text.endswith(p.terminator)
    assert out == gen.generate(ps, [0.7] * 4, [3, 4, 5, 6])  # seeded


def test_skipped_rows_keep_the_batches_and_what_on_batch_recorded_survives_a_stop(gen):
    """A resumed call (the first batch recorded, then skipped) samples the rest as the whole call did."""
    ps = [prompts.full_prompt(PROG, 0.9, "digits"), prompts.delta_prompt(PROG, 0.9, "digits")] * 3
    temps, seeds = [0.9] * 6, [101, 102, 103, 104, 105, 106]
    assert gen.batches(ps) == [[0, 2, 4], [1, 3, 5]]  # by kind, batch_size 4
    seen: list[tuple[list[int], int]] = []
    whole = gen.generate(ps, temps, seeds, on_batch=lambda ks, gs: seen.append((ks, len(gs))))
    assert seen == [([0, 2, 4], 3), ([1, 3, 5], 3)]

    class Stop(Exception):
        pass

    recorded = {}

    def record_then_stop(ks, gs):
        recorded.update(zip(ks, gs))
        raise Stop

    with pytest.raises(Stop):
        gen.generate(ps, temps, seeds, on_batch=record_then_stop)
    assert recorded == {k: whole[k] for k in (0, 2, 4)}
    rest = gen.generate(ps, temps, seeds, skip=set(recorded))
    assert [rest[k] for k in (0, 2, 4)] == [None] * 3 and [rest[k] for k in (1, 3, 5)] == [whole[k] for k in (1, 3, 5)]
    # A batch with one row recorded is generated whole; only the missing rows come back.
    part = gen.generate(ps, temps, seeds, skip={0, 1, 3, 5})
    assert part[2] == whole[2] and part[4] == whole[4] and part[0] is None
