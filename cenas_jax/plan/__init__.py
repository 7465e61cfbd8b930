"""``cenas plan``: predict a run's time per phase, its wall time and device-hours from per-token and per-step
costs, before running it (DESIGN.md §7).

``costs.py``: ``CostModel`` (what a token, a step, a compile cost on one kind of device, each figure with its
source), ``default_costs(device)`` (CPU: measured on this machine; GPU/TPU: assumptions), ``load_costs(path)``
(a YAML file of the same keys). ``predict.py``: ``Workload`` (tokens per answer, resampled and trained shares),
``predict(cfg, costs, hosts, devices_per_host) -> Prediction``, ``format_prediction``. ``inputs.py``: what the
prediction reads without running anything (the LLM's parameter count from its files' headers, dataset sizes, the
corpus, the warm start). ``calibrate.py``: ``measure_run(run_dir)`` reads a finished run's store and
``calibrate(...)`` fits the figures and the workload to it, with the predicted and measured seconds per phase.
"""

from cenas_jax.plan.costs import DEVICES, FIELDS, CostModel, default_costs, load_costs
from cenas_jax.plan.predict import ONCE, PHASES, Phase, Prediction, Workload, format_prediction, predict

__all__ = ["DEVICES", "FIELDS", "ONCE", "PHASES", "CostModel", "Phase", "Prediction", "Workload", "default_costs",
           "format_prediction", "load_costs", "predict"]
