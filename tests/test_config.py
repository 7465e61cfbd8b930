import pytest

from cenas_jax.config import ConfigError, RunConfig, from_dict, load_config, to_dict


def test_defaults_roundtrip():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig)
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\ntrain:\n  epochs: 2\n  batch_size: 32\nllm:\n  lora:\n    targets: [q_proj, v_proj]\n")
    cfg = load_config(p, ["train.learning_rate=0.05", "search.novelty.threshold=0.9", "data.data_dir=/x"])
    assert cfg.seed == 3
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.batch_size == 32
    assert cfg.train.learning_rate == 0.05
    assert cfg.llm.lora.targets == ("q_proj", "v_proj")
    assert cfg.search.novelty.threshold == 0.9
    assert cfg.data.data_dir == "/x"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["train.epoch=2"], "train.epoch: unknown key"),
        (["train.batch_size=abc"], "train.batch_size: expected int"),
        (["train.batch_size=0"], "train.batch_size: must be >= 1"),
        (["train.optimizer=lion"], "train.optimizer: expected one of"),
        (["llm.lora.targets=[q_proj, foo]"], "lora.targets"),
        (["nosuchsection.x=1"], "nosuchsection: unknown key"),
        (["train=3"], "train: expected a section"),
        (["search.novelty.threshold=1.5"], "novelty.threshold"),
        (["data.val_fraction=0.6", "data.test_fraction=0.5"], "val + test"),
        (["seed"], "expected key=value"),
    ],
)
def test_bad_config_names_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert fragment in str(e.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
