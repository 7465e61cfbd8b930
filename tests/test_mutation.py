"""The random-mutation generator (the controls' generator without an LLM): edits apply, parse, differ, build."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from cenas_jax.candidates import contract
from cenas_jax.candidates.corpus import load_corpus
from cenas_jax.search import prompts
from cenas_jax.search.delta import DeltaError, apply_edits, extract_code
from cenas_jax.search.generator import Generator, UpdateResult
from cenas_jax.search.mutation import OPERATORS, MutationGenerator, mutate, program_in_prompt

CORPUS = {e.name: e.source for e in load_corpus()}
SOME = ["mlp_small", "lenet5", "lenet_bn_relu", "mlp_deep_dropout", "vgg_small", "resnet_basic", "all_conv",
        "mobilenet_v1"]


def _norm(src: str) -> str:
    return "\n".join(ln.rstrip() for ln in src.strip().splitlines())


def test_it_is_a_generator_and_finds_the_program_in_both_prompt_kinds():
    gen = MutationGenerator(seed=0)
    assert isinstance(gen, Generator)
    src = CORPUS["lenet5"]
    for p in (prompts.delta_prompt(src, 0.5, "digits"), prompts.delta_prompt(src, 0.5, "digits", "unified_diff"),
              prompts.full_prompt(src, 0.5, "digits")):
        assert _norm(program_in_prompt(p.user)) == _norm(prompts.clean_program(src))  # as the prompt shows it
    with pytest.raises(ValueError, match="edit_format"):
        MutationGenerator(edit_format="patch")


def _seeds(base: int, n: int) -> list[int]:
    return [base * 1000 + i for i in range(n)]


@pytest.mark.parametrize("fmt", ["search_replace", "unified_diff"])
def test_delta_answers_are_edits_that_apply_parse_and_change_the_parent(fmt):
    gen = MutationGenerator(seed=1, edit_format=fmt)
    ps = [prompts.delta_prompt(CORPUS[n], 0.6, "digits", fmt) for n in SOME]
    gens = gen.generate(ps, [0.7] * len(ps), _seeds(11, len(ps)))
    assert len(gens) == len(ps)
    for name, g in zip(SOME, gens):
        assert g.finish_reason == "eos" and g.num_tokens > 0
        assert "```python" not in g.text  # an edit, not a program
        parent = prompts.clean_program(CORPUS[name])  # the parent as the prompt shows it
        child = apply_edits(parent, g.text, fmt)
        ast.parse(child)
        assert _norm(child) != _norm(parent)
    # Edits are shorter than the programs they change (the premise of delta mode's higher valid rate).
    assert np.mean([g.num_tokens for g in gens]) < 0.7 * np.mean([len(CORPUS[n]) / 2.9 for n in SOME])


def test_full_answers_are_whole_programs_in_a_python_block():
    gen = MutationGenerator(seed=2)
    ps = [prompts.full_prompt(CORPUS[n], 0.6, "digits") for n in SOME]
    for name, g in zip(SOME, gen.generate(ps, [0.7] * len(ps), _seeds(3, len(ps)))):
        assert g.text.startswith("```python\n") and g.text.endswith("\n```")
        child = extract_code(g.text)
        ast.parse(child)
        assert _norm(child) != _norm(prompts.clean_program(CORPUS[name]))


def test_deterministic_for_the_seed_and_different_across_seeds():
    ps = [prompts.delta_prompt(CORPUS[n], 0.6, "digits") for n in SOME]
    a = [g.text for g in MutationGenerator(seed=4).generate(ps, [0.7] * len(ps), _seeds(9, len(ps)))]
    b = [g.text for g in MutationGenerator(seed=4).generate(ps, [0.7] * len(ps), _seeds(9, len(ps)))]
    c = [g.text for g in MutationGenerator(seed=4).generate(ps, [0.7] * len(ps), _seeds(10, len(ps)))]
    d = [g.text for g in MutationGenerator(seed=5).generate(ps, [0.7] * len(ps), _seeds(9, len(ps)))]
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) >= len(ps) // 2
    assert sum(x != y for x, y in zip(a, d)) >= len(ps) // 2


def test_mutations_of_one_parent_are_diverse_and_use_every_kind_of_operator():
    src = CORPUS["lenet_bn_relu"]
    gen = MutationGenerator(seed=0)
    p = prompts.delta_prompt(src, 0.6, "digits")
    children = {_norm(apply_edits(src, gen.generate([p], [0.7], [s])[0].text)) for s in range(40)}
    assert len(children) >= 25  # 40 draws: mostly distinct programs, not a handful repeated
    assert len(gen.operator_counts) >= 5, gen.operator_counts
    rng = np.random.default_rng(0)
    _, applied = mutate(src, rng, n_mutations=3)
    assert len(applied) == 3 and set(applied) <= set(OPERATORS)


def test_most_mutations_build_and_pass_the_shape_check_on_digits():
    """The contract's build + shape check (what the sandbox's cheap stages run) on digits' 8x8x1 input."""
    gen = MutationGenerator(seed=7)
    names = sorted(CORPUS)
    ps = [prompts.delta_prompt(CORPUS[n], 0.6, "digits") for n in names]
    ok, errors = 0, []
    for name, g in zip(names, gen.generate(ps, [0.7] * len(ps), _seeds(1, len(ps)))):
        child = apply_edits(prompts.clean_program(CORPUS[name]), g.text)
        try:
            contract.shape_check(contract.build_net(child, 10), (8, 8, 1), 10)
            ok += 1
        except Exception as e:  # noqa: BLE001 - counted, shown on failure
            errors.append(f"{name}: {e}"[:160])
    rate = ok / len(names)
    assert rate >= 0.7, (rate, errors)


def test_update_learns_nothing_and_state_round_trips(tmp_path):
    gen = MutationGenerator(seed=3)
    gen.generate([prompts.full_prompt(CORPUS["mlp_small"], 0.5, "digits")], [0.5], [0])
    p = prompts.full_prompt(CORPUS["lenet5"], 0.5, "digits")
    res = gen.update([(p, prompts.full_completion(CORPUS["lenet5"]))], seed=0)
    assert res == UpdateResult() and res.steps == 0 and res.losses == ()
    gen.save(tmp_path)
    other = MutationGenerator(seed=3)
    other.restore(tmp_path)
    assert other.calls == 1 and other.operator_counts == gen.operator_counts


def test_a_prompt_without_a_program_gets_an_answer_the_loop_rejects():
    class P:
        user, system, mode, edit_format = "no program here", "", "delta", "search_replace"

    (g,) = MutationGenerator().generate([P()], [0.5], [0])
    with pytest.raises(DeltaError):
        apply_edits(CORPUS["lenet5"], g.text)


def test_a_generation_depends_on_its_own_seed_only_and_skip_and_on_batch_work():
    ps = [prompts.delta_prompt(CORPUS[n], 0.6, "digits") for n in SOME]
    seeds = _seeds(21, len(ps))
    whole = MutationGenerator(seed=4).generate(ps, [0.7] * len(ps), seeds)
    alone = [MutationGenerator(seed=4).generate([p], [0.7], [s])[0] for p, s in zip(ps, seeds)]
    assert whole == alone
    seen = []
    part = MutationGenerator(seed=4).generate(ps, [0.7] * len(ps), seeds, skip={0, 2},
                                              on_batch=lambda ks, gs: seen.append((ks, gs)))
    assert part[0] is None and part[2] is None and part[1] == whole[1] and part[3:] == whole[3:]
    assert [ks for ks, _ in seen] == [[k] for k in range(len(ps)) if k not in (0, 2)]
    assert all(gs == [whole[ks[0]]] for ks, gs in seen)
    with pytest.raises(ValueError, match="as many temperatures and seeds"):
        MutationGenerator().generate(ps, [0.7] * len(ps), seeds[:1])
