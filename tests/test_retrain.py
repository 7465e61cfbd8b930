"""`cenas retrain`: the best candidates of a run retrained at a long budget, scored on the test split."""

from __future__ import annotations

import zlib

import pytest

from cenas_jax.candidates.sandbox import Candidate, Evaluator
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

MLP = """
import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(self.num_classes)(x)
"""


def _sandbox() -> SandboxConfig:
    return SandboxConfig(workers=1, timeout_s=60, check_timeout_s=15, memory_mb=3072, max_params=200_000)


def test_evaluator_scores_on_the_test_split_when_asked():
    """eval_split="test": the worker gets the test arrays and its accuracy is the in-process test accuracy."""
    import jax

    from cenas_jax.candidates.contract import build_net
    from cenas_jax.data import load_dataset
    from cenas_jax.train import train_candidate

    tcfg = TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="eval_split"):
        Evaluator(DataConfig(name="digits"), tcfg, _sandbox(), eval_split="train")
    with Evaluator(DataConfig(name="digits"), tcfg, _sandbox(), seed=5, eval_split="test") as ev:
        (rec,) = ev.evaluate([Candidate("mlp", MLP)], train=True)
    assert rec.status == "ok", rec.error_message
    ds = load_dataset(DataConfig(name="digits"))
    built = build_net(MLP, 10)
    key = jax.random.fold_in(jax.random.PRNGKey(5), zlib.crc32(MLP.encode()) & 0x7FFFFFFF)
    cfg = TrainConfig(epochs=1, batch_size=32, compile_cache=False)
    test = train_candidate(built.module, built.takes_train, ds, cfg, key, eval_split="test")
    val = train_candidate(built.module, built.takes_train, ds, cfg, key, eval_split="val")
    assert abs(rec.accuracy - test.accuracy) <= 2 / len(ds.y_test)  # one thread vs many may flip a prediction
    assert test.accuracy != val.accuracy  # the two splits differ, so the check above tells them apart
