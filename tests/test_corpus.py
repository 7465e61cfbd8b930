"""Seed corpus: format, policy, build + shape at every standard input shape, diversity, and brief training on digits."""

from __future__ import annotations

import ast
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cenas_jax.candidates import contract
from cenas_jax.candidates.corpus import (
    CorpusError,
    check_entry,
    corpus_dir,
    corpus_hash,
    corpus_hash_of,
    duplicate_structures,
    load_corpus,
)
from cenas_jax.candidates.policy import check_policy
from cenas_jax.cli import main as cli_main

CORPUS = load_corpus()
BY_NAME = {e.name: e for e in CORPUS}
# Families the issue names; each must have at least one entry.
REQUIRED_FAMILIES = {
    "mlp", "lenet", "vgg", "resnet", "mobilenet", "densenet", "inception",
    "squeezenet", "convmixer", "vit", "mixer",
}  # fmt: skip


def test_corpus_is_large_diverse_and_well_formed():
    assert len(CORPUS) >= 30
    assert len(BY_NAME) == len(CORPUS)
    families = {e.family for e in CORPUS}
    assert REQUIRED_FAMILIES <= families and len(families) >= 15
    for entry in CORPUS:
        tree = ast.parse(entry.source)
        assert isinstance(tree.body[0], ast.Expr) and entry.description, entry.name
        assert 20 <= entry.lines <= 60, (entry.name, entry.lines)
        nets = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net"]
        assert len(nets) == 1, entry.name
    with_bn = [e.name for e in CORPUS if "nn.BatchNorm(" in e.source]
    with_dropout = [e.name for e in CORPUS if "nn.Dropout(" in e.source]
    plain = [e.name for e in CORPUS if "nn.BatchNorm(" not in e.source and "nn.Dropout(" not in e.source]
    assert min(len(with_bn), len(with_dropout), len(plain)) >= 5


def test_every_entry_passes_the_policy():
    for entry in CORPUS:
        assert check_policy(entry.source) == [], entry.name


# The smallest input (pooling guards), an odd-sized one (28 -> 14 -> 7 -> 3) and the largest (parameter bound);
# `corpus check` and the slow test below cover all standard shapes.
FAST_SHAPES = {k: contract.STANDARD_INPUT_SHAPES[k] for k in ("digits", "mnist", "imagenette")}


def check_all(shapes):
    checks = [check_entry(e, shapes, num_classes=10) for e in CORPUS]
    failures = {c.name: c.problems for c in checks if not c.ok}
    assert failures == {}
    for c in checks:
        # small enough for a 1-epoch CPU proxy; the MLPs grow with the input up to 16x16, the convnets barely
        assert 1_000 < c.params["imagenette"] < 300_000, (c.name, c.params)
        assert all(p <= c.params["imagenette"] for p in c.params.values()), (c.name, c.params)
    return checks


def test_every_entry_builds_and_has_the_right_shape_at_every_input_size():
    checks = check_all(FAST_SHAPES)
    # all distinct networks: no two entries share a forward-pass structure
    assert duplicate_structures(checks) == []
    assert len({c.structure_hash for c in checks}) == len(checks)


@pytest.mark.slow
def test_every_entry_at_every_standard_shape():
    checks = check_all(contract.STANDARD_INPUT_SHAPES)
    assert all(c.params["cifar10"] < 300_000 for c in checks)


def test_entries_follow_the_contract_with_another_class_count():
    for name in ("vit_tiny", "squeezenet", "resnet_basic"):
        built = contract.build_net(BY_NAME[name].source, 100)
        assert built.takes_train
        _, out = contract.shape_check(built, (32, 32, 3), 100)
        assert out == (2, 100)


def test_corpus_hash_is_stable_and_tracks_content(tmp_path):
    assert corpus_hash() == corpus_hash() == corpus_hash_of(CORPUS)
    copy = tmp_path / "corpus"
    shutil.copytree(corpus_dir(), copy)
    assert corpus_hash_of(load_corpus(copy)) == corpus_hash()  # independent of where the files lie
    path = copy / "mlp_small.py"
    path.write_text(path.read_text().replace("hidden: int = 128", "hidden: int = 64"))
    assert corpus_hash_of(load_corpus(copy)) != corpus_hash()


def test_malformed_corpus_files_are_named(tmp_path):
    (tmp_path / "nodoc.py").write_text("# family: x\nimport flax.linen as nn\n")
    with pytest.raises(CorpusError, match="nodoc.py.*one-line docstring"):
        load_corpus(tmp_path)
    (tmp_path / "nodoc.py").write_text('"""Doc."""\nimport flax.linen as nn\n')
    with pytest.raises(CorpusError, match="nodoc.py.*family"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "missing")


def test_cli_list_and_check(tmp_path, capsys):
    for name in ("mlp_small", "lenet_bn_relu"):
        shutil.copy(BY_NAME[name].path, tmp_path / f"{name}.py")
    assert cli_main(["corpus", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mlp_small" in out and "9,610" in out and "2 entries" in out  # 64*128+128 + 128*10+10
    assert cli_main(["corpus", "check", "--no-progress", "--dir", str(tmp_path)]) == 0
    assert "2/2 entries pass" in capsys.readouterr().out

    broken = BY_NAME["mlp_small"].source.replace("return nn.Dense(self.num_classes)(x)", "return x")
    (tmp_path / "broken.py").write_text(broken)
    (tmp_path / "evil.py").write_text(BY_NAME["mlp_small"].source.replace("import flax.linen as nn", "import os\nimport flax.linen as nn"))
    assert cli_main(["corpus", "check", "--no-progress", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  broken" in out and "expected (2, 10)" in out
    assert "FAIL  evil" in out and "[import]" in out
    assert "2/4 entries pass" in out


# ---------------------------------------------------------------------------
# Brief training on digits
# ---------------------------------------------------------------------------

# About two epochs of digits at batch 32: compilation dominates the cost, the steps are cheap,
# and plain (un-normalised) nets need ~60 steps at this rate before their loss starts to fall.
STEPS, BATCH, LR = 120, 32, 0.05


@pytest.fixture(scope="module")
def digits_batches():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images.astype(np.float32)[..., None] / 16.0
    x = (x - x.mean()) / x.std()
    rng = np.random.default_rng(0)
    epochs = -(-STEPS * BATCH // len(x))
    order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])[: STEPS * BATCH]
    return jnp.asarray(x[order]), jnp.asarray(data.target[order].astype(np.int32))


def train_briefly(source: str, x, y) -> np.ndarray:
    """SGD with momentum for STEPS steps on digits (a local loop, not the project's trainer); per-step losses."""
    built = contract.build_net(source, 10)
    key = jax.random.PRNGKey(0)
    variables = jax.jit(lambda k: contract.init_net(built, k, x[:BATCH]))(key)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    tx = optax.sgd(LR, momentum=0.9)

    @jax.jit
    def step(params, state, opt, xb, yb, dropout_key):
        def loss_fn(p):
            logits, updates = contract.apply_net(built, {"params": p, **state}, xb, True, dropout_key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        deltas, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, deltas), {**state, **updates}, opt, loss

    opt = tx.init(params)
    losses = []
    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        params, state, opt, loss = step(params, state, opt, x[sl], y[sl], jax.random.fold_in(key, i))
        losses.append(loss)
    return np.asarray(jax.device_get(losses))


def assert_trains(name: str, losses: np.ndarray) -> None:
    # Means over 10 steps smooth the batch noise; chance level is ln 10 = 2.30. Measured on the
    # corpus, the slowest entries reach about 0.65x their first loss by step 120 (the fastest, 0.05x).
    assert np.all(np.isfinite(losses)), name
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < 0.8 * first, f"{name}: loss {first:.3f} -> {last:.3f} after {STEPS} steps"


def test_a_batchnorm_dropout_entry_trains_on_digits(digits_batches):
    # The riskiest path (batch_stats updates + dropout keys) in the fast suite; the slow test trains every entry.
    assert_trains("lenet_bn_relu", train_briefly(BY_NAME["lenet_bn_relu"].source, *digits_batches))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_entry_trains_on_digits(name, digits_batches):
    assert_trains(name, train_briefly(BY_NAME[name].source, *digits_batches))
