"""Which pool evaluates candidates, by ``sandbox.backend``: this host's ``Evaluator`` ("local") or sandbox pools
on Ray actors (``ray_pool.RayEvaluator``, "ray"; DESIGN.md §7 "Ray"). Both have the interface the callers use:
``start``, ``evaluate``, ``evaluate_iter``, ``close``, a context manager. Ray itself is imported only when a
Ray pool is built."""

from __future__ import annotations

from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.ray_pool import RayEvaluator, check_installed
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig


def make_evaluator(
    data_cfg: DataConfig, train_cfg: TrainConfig, sandbox_cfg: SandboxConfig, *, seed: int = 0, eval_split: str = "val"
) -> Evaluator | RayEvaluator:
    """The pool ``sandbox_cfg.backend`` names; a ``UserError`` for "ray" without Ray installed."""
    if sandbox_cfg.backend == "ray":
        return RayEvaluator(data_cfg, train_cfg, sandbox_cfg, seed=seed, eval_split=eval_split)
    return Evaluator(data_cfg, train_cfg, sandbox_cfg, seed=seed, eval_split=eval_split)


def check_backend(sandbox_cfg: SandboxConfig) -> None:
    """Before a run starts: a ``UserError`` when the backend cannot be used here (Ray not installed)."""
    if sandbox_cfg.backend == "ray":
        check_installed()
