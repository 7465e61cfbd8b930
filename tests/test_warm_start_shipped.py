"""The warm start shipped in the package is the one the quickstart asks for (its key: model file, corpus pairs,
LoRA and fine-tuning settings). When this fails, the shipped adapter is stale: run `make warm-start`."""

from pathlib import Path

import pytest

from cenas_jax.config import load_config
from cenas_jax.paths import shipped_warm_starts
from cenas_jax.search.ce_update import warm_start_plan
from cenas_jax.search.llm_generator import model_fingerprint
from cenas_jax.search.loop import select_corpus

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "quickstart.yaml"


@pytest.fixture()
def packaged(monkeypatch):
    monkeypatch.delenv("CENAS_SHIPPED_WARM_STARTS", raising=False)
    return shipped_warm_starts()


def test_the_quickstarts_warm_start_is_shipped_with_its_adapters(packaged):
    cfg = load_config(QUICKSTART)
    _, key = warm_start_plan(cfg, select_corpus(cfg.search), model_fingerprint(cfg.llm.model.name))
    shipped = packaged / key
    found = sorted(p.name for p in packaged.iterdir()) if packaged.is_dir() else []
    assert (shipped / "COMPLETE").is_file(), f"no shipped warm start for key {key} (shipped: {found}): run make warm-start"
    assert (shipped / "adapters").is_dir() and (shipped / "made.json").is_file()
    assert not (shipped / "adapters" / "optimizer").exists(), "the optimiser state is never reused: do not ship it"
    assert found == [key], "only the current warm start is shipped"
