"""MinHash novelty filter: normalisation, shingles, LSH recall, near-copies, delta candidates, determinism."""

import glob
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from cenas_jax.config import ConfigError, NoveltyConfig, from_dict
from cenas_jax.search.delta import apply_edits
from cenas_jax.search.novelty import (
    NoveltyFilter,
    code_tokens,
    exact_jaccard,
    lsh_bands,
    mean_pairwise_jaccard,
    normalize_code,
    resample_temperatures,
    shingles,
)

CNN = '''"""A VGG-style CNN."""
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        # two stages of two convolutions
        for features in (32, 64):
            x = nn.Conv(features, (3, 3), padding="SAME")(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.Conv(features, (3, 3), padding="SAME")(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        h = jnp.mean(x, axis=(1, 2))
        h = nn.Dense(128)(h)
        h = nn.relu(h)
        h = nn.Dropout(0.3, deterministic=not train)(h)
        return nn.Dense(self.num_classes)(h)
'''

MLP = '''import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10
    hidden: tuple = (256, 128)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.Dense(width)(x)
            x = nn.LayerNorm()(x)
            x = nn.gelu(x)
        return nn.Dense(self.num_classes)(x)
'''

RESNET = '''import flax.linen as nn
import jax.numpy as jnp


class Residual(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(x)
        y = nn.GroupNorm(num_groups=4)(y)
        y = nn.swish(y)
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1))(x)
        return nn.swish(x + y)


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(24, (5, 5), strides=(2, 2))(x)
        for f in (24, 48, 96):
            x = Residual(f)(x, train)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return nn.Dense(self.num_classes)(jnp.max(x, axis=(1, 2)))
'''


# ---------------------------------------------------------------------------
# Normalisation and shingles
# ---------------------------------------------------------------------------


def test_comments_and_docstrings_do_not_count():
    src = 'def f(x):\n    """Doc\n    string."""\n    # a comment\n    y = "kept"  # trailing\n    return y\n'
    assert code_tokens(src) == ["def", "f", "(", "x", ")", ":", "y", "=", '"', "kept", '"', "return", "y"]
    assert "Doc" not in normalize_code(src) and "comment" not in normalize_code(src)
    # Class and module docstrings, implicitly concatenated ones too.
    src2 = '"""mod""" \n"a" "b"\nclass A:\n    """c"""\n    x = 1\n'
    assert code_tokens(src2) == ["class", "A", ":", "x", "=", "1"]


def test_token_regex_is_the_design_one():
    assert code_tokens("x=nn.Dense(1e-3)(x)") == ["x", "=", "nn", ".", "Dense", "(", "1", "e", "-", "3", ")", "(", "x", ")"]
    assert code_tokens("a_1 += b") == ["a_1", "+", "=", "b"]


def test_code_that_does_not_tokenize_falls_back_to_regex_strip():
    broken = 'x = 1  # note\n"""unterminated docstring\ny = 2\n'
    toks = code_tokens(broken)
    assert toks[:3] == ["x", "=", "1"] and "note" not in toks and "unterminated" not in toks
    bad_dedent = "def f():\n        return 1\n    x = 2  # c\n"
    assert code_tokens(bad_dedent) == ["def", "f", "(", ")", ":", "return", "1", "x", "=", "2"]


def test_shingles():
    toks = code_tokens(MLP)
    sh = shingles(MLP, 7)
    windows = {tuple(toks[i : i + 7]) for i in range(len(toks) - 6)}
    assert len(sh) == len(windows)
    assert shingles("a b", 7) == {"a\x1fb"}
    assert shingles("# only a comment\n", 7) == set()


def test_exact_jaccard_by_hand():
    # tokens a..h: shingles (k=2) {ab, bc, cd} vs {ab, bc, ce}: 2 / 4.
    assert exact_jaccard("a b c d", "a b c e", k=2) == pytest.approx(0.5)
    assert exact_jaccard(CNN, CNN) == 1.0
    assert exact_jaccard("", "# nothing") == 1.0


def test_minhash_estimate_matches_exact_jaccard_monte_carlo():
    """Over permutation seeds the estimate is unbiased, with the binomial spread sqrt(J(1-J)/128)."""
    progs = [CNN, MLP, RESNET] + _corpus_sources()[:8]
    progs += [CNN.replace("(32, 64)", "(16, 32)"), CNN.replace("nn.relu", "nn.elu"), MLP.replace("nn.gelu", "nn.relu")]
    pairs = list(itertools.combinations(range(len(progs)), 2))
    exact = np.array([exact_jaccard(progs[i], progs[j]) for i, j in pairs])
    errs = []
    for seed in range(1, 9):
        f = NoveltyFilter(NoveltyConfig(seed=seed))
        sigs = [f.signature(p) for p in progs]
        errs.append(np.array([sigs[i].jaccard(sigs[j]) for i, j in pairs]) - exact)
    errs = np.array(errs)  # (seeds, pairs)
    assert abs(errs.mean()) < 0.01
    inner = (exact > 0) & (exact < 1)
    z = errs[:, inner] / np.sqrt(exact[inner] * (1 - exact[inner]) / 128)
    assert 0.7 < z.std() < 1.3


# ---------------------------------------------------------------------------
# LSH recall guarantee
# ---------------------------------------------------------------------------


def test_lsh_bands_guarantee_recall_at_threshold():
    assert lsh_bands(128, 0.85) == (20, 6)
    assert lsh_bands(128, 1.0) == (1, 128)
    rng = np.random.default_rng(0)
    base = rng.integers(1, 2**32 - 1, size=128, dtype=np.uint64)
    for tau in (0.85, 0.9, 0.95):
        b, r = lsh_bands(128, tau)
        u = int(math.floor(128 * (1 - tau) + 1e-9))  # most differing slots an estimate >= tau allows
        other = base.copy()
        # Adversarial: spoil one slot in each of the first u bands (datasketch's own bands would all be hit).
        for k in range(u):
            other[k * r] += np.uint64(1)
        m1, m2 = MinHash(num_perm=128, scheme="affine32", hashvalues=base), MinHash(num_perm=128, scheme="affine32", hashvalues=other)
        assert m1.jaccard(m2) >= tau
        ours = MinHashLSH(num_perm=128, params=(b, r))
        ours.insert("x", m1)
        assert ours.query(m2) == ["x"]
    # Datasketch's default banding for 0.85 (8 bands of 16) misses such a pair.
    default = MinHashLSH(num_perm=128, threshold=0.85)
    other = base.copy()
    for k in range(default.b):
        other[k * default.r] += np.uint64(1)
    default.insert("x", MinHash(num_perm=128, scheme="affine32", hashvalues=base))
    assert MinHash(num_perm=128, scheme="affine32", hashvalues=base).jaccard(MinHash(num_perm=128, scheme="affine32", hashvalues=other)) >= 0.85
    assert default.query(MinHash(num_perm=128, scheme="affine32", hashvalues=other)) == []


# ---------------------------------------------------------------------------
# Full mode: near-copies rejected, different programs accepted
# ---------------------------------------------------------------------------


def _filter(**kw) -> NoveltyFilter:
    f = NoveltyFilter(NoveltyConfig(**kw))
    f.add_many([("L-cnn", CNN), ("L-mlp", MLP), ("L-resnet", RESNET)])
    return f


NEAR_COPIES = {
    "comments_changed": CNN.replace("# two stages of two convolutions", "# feature extractor").replace(
        '"""A VGG-style CNN."""', '"""Improved CNN with better accuracy."""'
    )
    + "# end of model\n",
    "reformatted": CNN.replace(" = ", "=").replace(", ", ",").replace(
        "nn.Dropout(0.3, deterministic=not train)(h)", "nn.Dropout(\n            0.3,\n            deterministic=not train,\n        )(h)"
    ),
    "renamed_variable": CNN.replace("features", "width"),
    "widths_changed": CNN.replace("Dense(128)", "Dense(256)").replace("Dropout(0.3", "Dropout(0.5"),
}


@pytest.mark.parametrize("name", sorted(NEAR_COPIES))
def test_near_copies_are_rejected(name):
    f = _filter()
    v = f.check(NEAR_COPIES[name], mode="full")
    assert not v.accepted, v
    assert v.nearest_key == "L-cnn" and v.similarity >= 0.85 and v.threshold == 0.85


NEW_PROGRAMS = {
    "transformer_like": '''import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10
    dim: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False):
        b, h, w, c = x.shape
        tokens = nn.Dense(self.dim)(x.reshape((b, h * w, c)))
        attn = nn.SelfAttention(num_heads=4)(nn.LayerNorm()(tokens))
        tokens = tokens + attn
        tokens = tokens + nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(nn.LayerNorm()(tokens))))
        return nn.Dense(self.num_classes)(tokens.mean(axis=1))
''',
    "depthwise": '''import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(32, (3, 3), strides=(2, 2), padding="SAME")(x)
        for out in (64, 128, 128):
            c = x.shape[-1]
            x = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c)(x)
            x = nn.relu6(nn.BatchNorm(use_running_average=not train)(x))
            x = nn.Conv(out, (1, 1))(x)
            x = nn.relu6(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))
''',
    "cnn_restructured": CNN.replace(
        """            x = nn.Conv(features, (3, 3), padding="SAME")(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.Conv(features, (3, 3), padding="SAME")(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))""",
        """            y = nn.Conv(features, (1, 1))(x)
            x = nn.Conv(features, (5, 5), padding="SAME", use_bias=False)(x)
            x = nn.GroupNorm(num_groups=8)(x)
            x = nn.silu(x) + y
            x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME")""",
    ),
}


@pytest.mark.parametrize("name", sorted(NEW_PROGRAMS))
def test_genuinely_different_programs_are_accepted(name):
    f = _filter()
    v = f.check(NEW_PROGRAMS[name], mode="full")
    assert v.accepted, v
    assert v.similarity < 0.85
    if v.nearest_key is not None:
        assert v.similarity == pytest.approx(f.similarity(v.nearest_key, NEW_PROGRAMS[name]))


def test_accepted_programs_join_the_index():
    f = _filter()
    prog = NEW_PROGRAMS["depthwise"]
    assert f.check(prog).accepted
    f.accept("c0-001", prog)
    again = f.check(prog.replace("# x", "") + "\n# copy\n")
    assert not again.accepted and again.nearest_key == "c0-001" and again.similarity == 1.0
    with pytest.raises(ValueError, match="'c0-001' is already indexed"):
        f.accept("c0-001", prog)
    assert len(f) == 4 and "c0-001" in f


def test_disabled_filter_accepts_but_still_measures():
    f = _filter(enabled=False)
    v = f.check(CNN)
    assert v.accepted and v.nearest_key == "L-cnn" and v.similarity == 1.0


def test_determinism_across_instances_and_processes():
    """Same verdicts from two filters; same signatures in a fresh process with another hash seed.

    The fresh process also shows that the four steps of the cycle load without JAX or the LLM.
    """
    a, b = _filter(), _filter()
    for name, src in {**NEAR_COPIES, **NEW_PROGRAMS}.items():
        assert a.check(src) == b.check(src), name
    sig = a.signature(CNN).hashvalues
    code = (
        "import sys\n"
        "import cenas_jax.search.prompts, cenas_jax.search.delta, cenas_jax.search.elites\n"
        "from cenas_jax.search.novelty import NoveltyFilter\n"
        "src = sys.stdin.read()\n"
        "print(','.join(str(int(v)) for v in NoveltyFilter().signature(src).hashvalues))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'optax', 'torch', 'transformers'}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=CNN, capture_output=True, text=True, env=env, check=True)
    sig_line, heavy = out.stdout.strip().split("\n")
    assert [int(v) for v in sig_line.split(",")] == [int(v) for v in sig]
    assert heavy == "[]"
    # A different permutation seed gives different signatures.
    assert not np.array_equal(NoveltyFilter(NoveltyConfig(seed=2)).signature(CNN).hashvalues, sig)


# ---------------------------------------------------------------------------
# Delta mode
# ---------------------------------------------------------------------------

WIDER = "<<<<<<< SEARCH\n        h = nn.Dense(128)(h)\n=======\n        h = nn.Dense(512)(h)\n>>>>>>> REPLACE\n"


def test_delta_edit_passes_copy_of_parent_does_not():
    f = _filter()
    child = apply_edits(CNN, WIDER)
    v = f.check(child, mode="delta", parent_key="L-cnn")
    assert v.accepted and v.threshold == 1.0 and v.parent_similarity is not None and 0.85 < v.parent_similarity < 1.0
    # The same edit scored as a full-mode candidate is a near-copy.
    assert not f.check(child, mode="full").accepted
    # A 'delta' that only touches a comment is a copy of the parent.
    copy = apply_edits(CNN, "<<<<<<< SEARCH\n# two stages of two convolutions\n=======\n# two stages\n>>>>>>> REPLACE")
    v = f.check(copy, mode="delta", parent_key="L-cnn")
    assert not v.accepted and v.nearest_key == "L-cnn" and v.parent_similarity == 1.0
    # Two children with the same edit in one batch: the second is a copy of the first.
    f.accept("c1-000", child)
    v = f.check(apply_edits(CNN, WIDER.replace("        h = nn.Dense(512)", "h = nn.Dense(512)")), mode="delta", parent_key="L-cnn")
    assert not v.accepted and v.nearest_key == "c1-000"


def test_delta_parent_can_be_left_out():
    f = _filter(delta_parent_counts=False)
    copy = CNN + "# unchanged\n"
    v = f.check(copy, mode="delta", parent_key="L-cnn")
    assert v.accepted and v.nearest_key != "L-cnn" and v.parent_similarity == 1.0
    # Without parent exclusion settings, threshold_delta=None falls back to the full-mode tau.
    g = _filter(threshold_delta=None)
    assert g.check(apply_edits(CNN, WIDER), mode="delta", parent_key="L-cnn").threshold == 0.85


def test_bad_arguments():
    f = _filter()
    with pytest.raises(KeyError, match="parent 'nope' is not indexed"):
        f.check(CNN, mode="delta", parent_key="nope")
    with pytest.raises(ValueError, match="novelty mode 'diff'"):
        f.check(CNN, mode="diff")
    with pytest.raises(KeyError, match="no program with key 'x'"):
        f.similarity("x", CNN)
    for bad, key in (({"threshold_delta": 1.5}, "novelty.threshold_delta"), ({"max_resamples": -1}, "novelty.max_resamples")):
        with pytest.raises(ConfigError, match=key):
            from_dict(NoveltyConfig, bad, prefix="novelty")


# ---------------------------------------------------------------------------
# Diversity and resampling helpers
# ---------------------------------------------------------------------------


def test_mean_pairwise_jaccard():
    progs = [CNN, MLP, RESNET]
    want = np.mean([exact_jaccard(a, b) for a, b in itertools.combinations(progs, 2)])
    assert mean_pairwise_jaccard(progs) == pytest.approx(want)
    assert mean_pairwise_jaccard([CNN, CNN]) == 1.0
    assert math.isnan(mean_pairwise_jaccard([CNN]))


def test_resample_temperatures():
    assert resample_temperatures(0.35, 0.1, 2) == pytest.approx([0.35, 0.45, 0.55])
    assert resample_temperatures(0.7, 0.0, 0) == [0.7]
    with pytest.raises(ValueError):
        resample_temperatures(0.3, 0.1, -1)


# ---------------------------------------------------------------------------
# The measurement behind tau_delta (DESIGN.md §1 "The novelty filter"): Jaccard of delta children to their parent
# ---------------------------------------------------------------------------


class _quiet:
    """A context that swallows prints (the fast variant of the measurement stays silent)."""

    def __enter__(self):
        import contextlib
        import io

        self._cm = contextlib.redirect_stdout(io.StringIO())
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _corpus_sources() -> list[str]:
    root = Path(__file__).resolve().parents[1] / "cenas_jax" / "candidates" / "corpus"
    return [Path(p).read_text() for p in sorted(glob.glob(str(root / "*.py")))]


def _block(search: list[str], replace: list[str]) -> str:
    return "<<<<<<< SEARCH\n" + "\n".join(search) + "\n=======\n" + "\n".join(replace) + "\n>>>>>>> REPLACE\n"


def _ind(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _code_lines(src: str, pat: str) -> list[int]:
    r = re.compile(pat)
    return [i for i, line in enumerate(src.splitlines()) if r.search(line) and not line.lstrip().startswith(("#", '"""'))]


def _one_line_edit(pat, change):
    def edit(src):
        lines = src.splitlines()
        for i in _code_lines(src, pat):
            new = change(lines[i])
            if new != lines[i]:
                return _block([lines[i]], new.split("\n"))
        return None

    return edit


def _double_first_width(line):
    return re.sub(r"\b(\d{2,4})\b", lambda m: str(int(m.group(1)) * 2), line, count=1)


LAYER_END = r"nn\.(Conv|Dense)\(.*\)\((x|y|h)\)$"
EDITS = {
    "width": _one_line_edit(r"nn\.(Conv|Dense)\(\d{2,4}|\(\d{2,4}, \d{2,4}", _double_first_width),
    "kernel": _one_line_edit(r"\(3, 3\)", lambda s: s.replace("(3, 3)", "(5, 5)", 1)),
    "add_batchnorm": _one_line_edit(LAYER_END, lambda s: s + "\n" + _ind(s) + "x = nn.BatchNorm(use_running_average=not train)(x)"),
    "add_dropout": _one_line_edit(r"return nn\.Dense\(self\.num_classes\)\(x\)", lambda s: _ind(s) + "x = nn.Dropout(0.25, deterministic=not train)(x)\n" + s),
    "activation": _one_line_edit(r"nn\.relu", lambda s: s.replace("nn.relu", "nn.gelu", 1)),
    "add_block": _one_line_edit(
        r"nn\.Conv\(.*\)\(x\)$",
        lambda s: s + "\n" + "\n".join(_ind(s) + t for t in ('x = nn.Conv(64, (3, 3), padding="SAME")(x)', "x = nn.BatchNorm(use_running_average=not train)(x)", "x = nn.relu(x)")),
    ),
    "replace_layer": _one_line_edit(r"max_pool|avg_pool", lambda s: s.replace("max_pool", "avg_pool") if "max_pool" in s else s.replace("avg_pool", "max_pool")),
    "add_dense": _one_line_edit(r"return nn\.Dense\(self\.num_classes\)\(x\)", lambda s: _ind(s) + "x = nn.relu(nn.Dense(256)(x))\n" + s),
    "all_activations": lambda src: "".join(
        _block([src.splitlines()[i]], [src.splitlines()[i].replace("nn.relu", "nn.swish")]) for i in _code_lines(src, r"nn\.relu")
    )
    or None,
    "several_widths": lambda src: "".join(
        _block([src.splitlines()[i]], [re.sub(r"\b(\d{2,4})\b", lambda m: str(int(m.group(1)) * 3 // 2), src.splitlines()[i])])
        for i in _code_lines(src, r"\b\d{2,4}\b")[:3]
    )
    or None,
}

COPIES = {
    "comments": lambda s: "\n".join(line + "  # tuned" if line.strip().startswith("x =") else line for line in s.splitlines()) + "\n",
    "docstring": lambda s: '"""An improved network."""\n' + s,
    "blank_lines": lambda s: s.replace("\n\n\nclass", "\n\n\n# the network\n\nclass").replace("    @nn.compact", "\n    @nn.compact"),
    "spacing": lambda s: s.replace(" = ", "="),
    "spacing2": lambda s: s.replace(", ", " ,  "),
}


@pytest.mark.parametrize(
    "subset", [pytest.param(8, id="8-corpus-programs"), pytest.param(None, id="whole-corpus", marks=pytest.mark.slow)]
)
def test_delta_similarity_to_parent(capsys, subset):
    """Real edits pass τ_delta, copies do not; τ = 0.85 against the parent would reject most real edits."""
    sources = _corpus_sources()[:subset] + [CNN, MLP, RESNET]
    f = NoveltyFilter(NoveltyConfig())
    for i, s in enumerate(sources):
        f.add(f"p{i}", s)
    exact, est, kinds, copies_est = [], [], {}, []
    accepted = 0
    for i, s in enumerate(sources):
        sp = shingles(s)
        for kind, edit in EDITS.items():
            text = edit(s)
            if text is None:
                continue
            child = apply_edits(s, text)
            sc = shingles(child)
            exact.append(len(sp & sc) / len(sp | sc))
            v = f.check(child, mode="delta", parent_key=f"p{i}")
            est.append(v.parent_similarity)
            kinds.setdefault(kind, []).append(exact[-1])
            accepted += v.accepted
        for kind, copy in COPIES.items():
            c = copy(s)
            if c != s:
                v = f.check(c, mode="delta", parent_key=f"p{i}")
                copies_est.append(v.parent_similarity)
                assert not v.accepted, (i, kind)
    exact_a, est_a = np.array(exact), np.array(est)
    report = capsys.disabled() if subset is None else _quiet()
    with report:
        print(f"\n{len(sources)} programs, {len(exact)} edits, {len(copies_est)} copies")
        for name, a in (("exact", exact_a), ("estimated", est_a)):
            print(f"  edits {name:9s}: min {a.min():.3f}  5% {np.percentile(a, 5):.3f}  median {np.median(a):.3f}  "
                  f"95% {np.percentile(a, 95):.3f}  max {a.max():.3f}")
        print(f"  copies estimated: min {min(copies_est):.3f}")
        print("  tau  " + "  ".join(f"{t:5.2f}" for t in (0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0)))
        print("  rej  " + "  ".join(f"{int((est_a >= t).sum()):5d}" for t in (0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0)))
        for kind, v in kinds.items():
            print(f"  {kind:16s} n={len(v):2d}  median {np.median(v):.3f}  max {max(v):.3f}")
    assert len(exact) >= 2 * len(sources) and len(kinds) == len(EDITS)
    assert min(copies_est) == 1.0  # copies up to comments/layout are exact copies for the filter
    assert accepted >= 0.95 * len(exact)  # real edits pass τ_delta
    assert (est_a >= 0.85).mean() > 0.6  # while the full-mode τ would reject most of them
