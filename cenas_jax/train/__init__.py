"""Proxy trainer: ``train_candidate(module, takes_train, dataset, cfg, key) -> TrainResult``."""

from cenas_jax.train.compile_cache import default_cache_dir, disable_compile_cache, enable_compile_cache
from cenas_jax.train.errors import TrainError
from cenas_jax.train.proxy import TrainResult, evaluate_accuracy, train_candidate
from cenas_jax.train.strategy import Strategy, choose_strategy

__all__ = [
    "TrainError",
    "TrainResult",
    "Strategy",
    "choose_strategy",
    "default_cache_dir",
    "disable_compile_cache",
    "enable_compile_cache",
    "evaluate_accuracy",
    "train_candidate",
]
