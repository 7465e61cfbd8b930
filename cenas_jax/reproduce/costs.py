"""What a reproduction plan will cost, predicted by ``cenas plan``'s model (``cenas_jax/plan``): every search run
per phase with its dominant phase, proxy-snr and retrain from the same step and compile figures, and the
total device-hours. ``make reproduce CHECK=1`` prints it (``HOSTS``, ``DEVICES``, ``DEVICE``, ``COSTS``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from cenas_jax.config import RunConfig, load_config
from cenas_jax.errors import UserError
from cenas_jax.plan import CostModel, Prediction, predict
from cenas_jax.plan import inputs as plan_inputs
from cenas_jax.plan.predict import hours_unit, proxy_steps
from cenas_jax.report.fmt import duration
from cenas_jax.reproduce.plan import Plan, Step, planned_config

# The paper's LLMs are 7B models (DESIGN.md §8): the size assumed for a checkpoint that cannot be read here.
ASSUMED_PARAMS = 7e9


@dataclasses.dataclass(frozen=True)
class PlanCost:
    """The plan's predicted cost: each search run's prediction, the training-only steps' seconds, the totals."""

    device: str
    hosts: int
    devices_per_host: int
    runs: tuple[tuple[str, Prediction], ...]
    other: tuple[tuple[str, float], ...]  # proxy-snr and retrain steps: predicted wall seconds
    notes: tuple[str, ...]

    @property
    def wall_s(self) -> float:
        return sum(p.wall_s for _, p in self.runs) + sum(s for _, s in self.other)

    @property
    def device_hours(self) -> float:
        return self.hosts * self.devices_per_host * self.wall_s / 3600


def plan_cost(plan: Plan, costs: CostModel, hosts: int = 1, devices_per_host: int = 1) -> PlanCost:
    """Predict every step of a paper plan that uses the devices: its search runs with ``cenas_jax.plan.predict``,
    proxy-snr and retrain as trainings at the same figures. Checkpoints that cannot be read here count as 7B
    models; a warm start trained by an earlier run of the plan (same model and key) is counted as cached."""
    runs: list[tuple[str, Prediction]] = []
    notes: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    configs: dict[str, RunConfig] = {}
    for step in (s for s in plan.steps if s.kind == "run"):
        cfg = planned_config(step)
        configs[step.name] = cfg
        params = None
        warm = plan_inputs.WarmStart("off")
        if cfg.search.generator == "llm":
            try:
                params = float(plan_inputs.model_params(cfg.llm.model.name))
            except UserError:
                params = ASSUMED_PARAMS
                note = "a checkpoint that cannot be read here counts as a 7B model (the paper's LLMs, DESIGN.md §8)"
                if note not in notes:
                    notes.append(note)
            warm = plan_inputs.warm_start(cfg)
            ident = (cfg.llm.model.name, warm.key)
            if warm.status == "trained" and ident in seen:
                warm = dataclasses.replace(warm, status="cached")
            seen.add(ident)
        runs.append((step.name, predict(cfg, costs, hosts, devices_per_host, model_params=params, warm=warm,
                                        label=step.name)))
    other = [(s.name, _training_step_s(s, configs, costs, hosts, devices_per_host))
             for s in plan.steps if s.kind in ("proxy_snr", "retrain")]
    return PlanCost(costs.device, hosts, devices_per_host, tuple(runs), tuple(other), tuple(notes))


def _arg(args: tuple[str, ...], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


def _training_step_s(step: Step, configs: dict[str, RunConfig], costs: CostModel, hosts: int,
                     devices_per_host: int) -> float:
    """Wall seconds of a proxy-snr or retrain step: its trainings (compile + seeds x epochs of steps) over the
    workers."""
    if step.kind == "proxy_snr":
        overrides = [step.args[i + 1] for i, x in enumerate(step.args[:-1]) if x == "--set"]
        cfg = load_config(step.args[1], overrides)
        p = cfg.proxy_snr
        k = p.max_architectures or plan_inputs.corpus_size(cfg)
        runs = [(k, p.seeds, p.proxy_epochs), (k, p.truth_seeds, p.truth_epochs)]
    else:
        run_name = next((n for n in configs if Path(step.args[1]).name == n), None)
        if run_name is None:
            return 0.0
        cfg = configs[run_name]
        k = int(_arg(step.args, "--top", "10"))
        runs = [(k, int(_arg(step.args, "--seeds", "1")), float(_arg(step.args, "--epochs", "50")))]
    shapes = plan_inputs.pool_shapes(cfg)
    batch = cfg.train.batch_size
    work = 0.0
    for n, seeds, epochs in runs:
        per = sum(costs.compile_s + seeds * proxy_steps(epochs, sh.steps_per_epoch(batch))
                  * costs.step_seconds(sh.height, sh.width, batch) for sh in shapes) / len(shapes)
        work += n * per
    workers = hosts * plan_inputs.workers_per_host(cfg, costs.device, devices_per_host)
    used = min(workers, max(1, k))
    return work / (used * costs.efficiency(math.ceil(used / hosts)))


def format_plan_cost(pc: PlanCost) -> str:
    """A table of the search runs (seconds per cycle per phase, the dominant phase, wall time, device-hours), the
    training-only steps, the total, and what the figures rest on."""
    unit = hours_unit(pc.device)
    dev = "core" if pc.device == "cpu" else pc.device.upper()
    w = max([len("search run")] + [len(n) for n, _ in (*pc.runs, *pc.other)])
    lines = [f"cenas plan's prediction on {pc.hosts} host(s) x {pc.devices_per_host} {dev}(s) ({pc.device} figures; "
             f"`cenas plan CONFIG --device {pc.device}` explains each):",
             f"  {'search run':<{w}} {'generate':>9} {'train':>9} {'select':>7} {'update':>9}   {'dominant':<14} "
             f"{'once':>7} {'wall':>8} {unit:>10}"]
    for name, p in pc.runs:
        s = {ph.name: ph.seconds for ph in p.cycle}
        lines.append(f"  {name:<{w}} {s['generate']:>8.0f}s {s['train']:>8.0f}s {s['select']:>6.0f}s {s['update']:>8.0f}s"
                     f"   {p.dominant + f' {p.share(p.dominant):.0%}':<14} {duration(p.once_s):>7} "
                     f"{duration(p.wall_s):>8} {p.device_hours:>10,.1f}")
    lines.append("  (seconds per cycle; once: loading the LLM, the reference phase, the warm start)")
    for name, secs in pc.other:
        lines.append(f"  {name:<{w}} {duration(secs):>8} wall, {pc.hosts * pc.devices_per_host * secs / 3600:,.1f} "
                     f"{unit} (trainings at the same step and compile figures)")
    lines.append(f"total: {pc.device_hours:,.1f} {unit} ({duration(pc.wall_s)} of wall time, one step after another)")
    assumed = sorted({k for _, p in pc.runs for k in p.costs.sources if p.costs.is_assumed(k)})
    if assumed:
        lines.append(f"  ASSUMED {pc.device} figures: {', '.join(assumed)} (pass measured ones with COSTS=FILE; "
                     f"`cenas plan --help` shows the keys)")
    lines.extend(f"  - {n}" for n in pc.notes)
    if pc.runs:
        lines.append("  - workload (every run): " + "; ".join(
            a for a in pc.runs[0][1].assumptions if a.startswith(("generations:", "trained:"))))
    return "\n".join(lines)

