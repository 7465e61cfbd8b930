"""Every YAML under experiments/ must load into a RunConfig (a config that does not load is a broken experiment)."""

from pathlib import Path

import pytest

from cenas_jax.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1] / "experiments"
YAMLS = sorted(ROOT.rglob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in YAMLS)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path} must start with a comment giving the command and the expected outcome"
