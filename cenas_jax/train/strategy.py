"""How the trainer runs epochs and seeds on this platform (DESIGN.md §3, "Speed")."""

from __future__ import annotations

import dataclasses

from cenas_jax.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Strategy:
    """``epoch``: "loop" (Python loop of jitted steps) or "scan" (one lax.scan per epoch);
    ``seed``: "sequential" (one seed after another) or "vmap" (all seeds in one program)."""

    epoch: str
    seed: str

    @property
    def name(self) -> str:
        return f"{self.epoch}/{self.seed}"


def choose_strategy(cfg: TrainConfig, platform: str, has_conv: bool) -> Strategy:
    """Pick the strategy by rule; ``cfg.epoch_strategy``/``cfg.seed_strategy`` force either.

    Measured on XLA:CPU: an epoch as one ``lax.scan`` is ~9x slower than a
    loop of jitted steps when the body has convolutions (jax-ml/jax#12868),
    while MLPs gain from the scan (no per-step dispatch); vmapping 8 conv
    seeds is 22-37x slower than one seed on CPU (grouped convolutions). On
    GPU/TPU scan and vmap are the point.
    """
    on_cpu = platform == "cpu"
    if cfg.epoch_strategy != "auto":
        epoch = cfg.epoch_strategy
    else:
        epoch = "loop" if (on_cpu and has_conv) else "scan"
    if cfg.seed_strategy != "auto":
        seed = cfg.seed_strategy
    else:
        seed = "sequential" if (on_cpu or cfg.seeds == 1) else "vmap"
    return Strategy(epoch=epoch, seed=seed)
