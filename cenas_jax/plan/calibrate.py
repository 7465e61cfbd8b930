"""``cenas plan --from-run RUN_DIR``: the figures and the workload fitted to a finished run, and how well the model
predicts that run.

What a run's store records (``cenas_jax/store``) and what each is used for:

- ``timings`` per cycle and phase (``generate``, its ``sample`` part, ``train``, ``select``, ``update``; the
  ``reference`` phase at cycle -1): the phases' measured seconds;
- the candidates (cycle, mode, the prompt's user message, the answer's token count): generations per slot, tokens
  per prompt (estimated from characters, ``search/update.CHARS_PER_TOKEN_ESTIMATE``) and per answer;
- the proxy evaluations (compile, training and wall seconds per candidate): the step and compile figures, and the
  share of slots that were trained;
- each cycle's ``update`` record (tokens fed, over every pass): the fine-tuning figures;
- the manifest's host (``cpu_count``, ``jax_backend``): the device kind and the pool the run had.

Sampling: the store does not separate the prefill from the decoding, so both rates are scaled by one factor
that makes the sampling seconds match. Not recorded, so kept: the LLM's load time and the pool's efficiency.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cenas_jax.config import RunConfig
from cenas_jax.errors import UserError
from cenas_jax.plan import inputs
from cenas_jax.plan.costs import CostModel
from cenas_jax.plan.predict import PHASES, Prediction, Workload, predict, proxy_steps
from cenas_jax.rundir import REFERENCE_CYCLE, RunDir
from cenas_jax.search.prompts import load_template
from cenas_jax.search.update import CHARS_PER_TOKEN_ESTIMATE
from cenas_jax.store import PROXY, RunStore

MODES = ("full", "delta")


@dataclasses.dataclass(frozen=True)
class CycleMeasure:
    """One finished cycle as the store recorded it."""

    cycle: int
    seconds: Mapping[str, float]  # per phase of PHASES
    sample_s: float
    generations: Mapping[str, int]  # per mode
    prompt_tokens: Mapping[str, float]  # summed per mode (estimated from characters)
    new_tokens: Mapping[str, float]  # summed per mode
    trained: int  # candidates with a proxy evaluation (ok or not)
    update_tokens: float | None  # tokens the CE update fed (every pass)

    @property
    def n_generations(self) -> int:
        return sum(self.generations.values())


@dataclasses.dataclass(frozen=True)
class EvalMeasure:
    """One proxy evaluation: its cycle (-1: the reference phase), dataset and seconds."""

    cycle: int
    dataset: str
    compile_s: float | None
    train_s: float
    wall_s: float | None


@dataclasses.dataclass(frozen=True)
class RunMeasurement:
    run_dir: Path
    cfg: RunConfig
    device: str
    devices_per_host: int  # cores on cpu
    cycles: tuple[CycleMeasure, ...]
    evaluations: tuple[EvalMeasure, ...]
    reference_s: float | None  # the reference phase (with the warm start); None: not recorded
    warm_reused: bool | None  # whether the warm start was restored; None: not recorded

    def mean(self, phase: str) -> float:
        return sum(c.seconds[phase] for c in self.cycles) / len(self.cycles)


def _device_of(manifest: Mapping[str, Any]) -> tuple[str, int]:
    """(device kind, devices per host: cores on cpu) from a manifest's ``jax_backend`` ("cpu x1", "gpu x8")."""
    backend = str(manifest.get("jax_backend") or "cpu x1")
    name, _, count = backend.partition(" x")
    kind = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu"}.get(name.strip().lower(), "cpu")
    if kind == "cpu":
        cores = manifest.get("cpu_count")
        return "cpu", int(cores) if isinstance(cores, int) and cores > 0 else 1
    return kind, int(count) if count.strip().isdigit() and int(count) > 0 else 1


def measure_run(run_dir: str | Path) -> RunMeasurement:
    """Read what a run's store and manifest recorded of its finished cycles. ``UserError`` when ``run_dir`` is not a
    run, has no store, or no cycle finished."""
    rd = RunDir(run_dir)
    cfg = rd.load_config()
    if not (rd.path / "store.sqlite").is_file():
        raise UserError(f"{rd.path}: no store.sqlite: the run recorded nothing to calibrate from")
    device, devices = _device_of(rd.manifest())
    system_chars = len(load_template("system").template)
    with RunStore(rd.path, create=False) as store:
        run = store.get_run("main")
        if run is None:
            raise UserError(f"{rd.path}: the run store holds no run")
        rid = run["id"]
        timings = store.timings(rid)
        records = {c["cycle"]: c for c in store.cycles(rid)}
        cands = store.candidates(run_id=rid)
        cycle_of = {c["id"]: c["cycle"] for c in cands}
        evals = [e for e in store.evaluations(run_id=rid, budget=PROXY) if e["candidate_id"] in cycle_of]
    finished = [t for t in sorted(timings) if t >= 0 and all(p in timings[t] for p in PHASES)]
    if not finished:
        raise UserError(f"{rd.path}: no cycle finished (the store has no timings of a whole cycle) to calibrate from")
    evaluated: dict[int, set[str]] = {}
    for e in evals:
        evaluated.setdefault(cycle_of[e["candidate_id"]], set()).add(e["candidate_id"])
    cycles = []
    for t in finished:
        gens = {m: 0 for m in MODES}
        ptok = {m: 0.0 for m in MODES}
        ntok = {m: 0.0 for m in MODES}
        for c in cands:
            if c["cycle"] != t or c["mode"] not in MODES:
                continue
            gens[c["mode"]] += 1
            ptok[c["mode"]] += (len(c["prompt"] or "") + system_chars) / CHARS_PER_TOKEN_ESTIMATE
            ntok[c["mode"]] += c["token_count"] or 0
        upd = records.get(t, {}).get("update")
        cycles.append(CycleMeasure(
            cycle=t, seconds={p: float(timings[t][p]) for p in PHASES}, sample_s=float(timings[t].get("sample", 0.0)),
            generations=gens, prompt_tokens=ptok, new_tokens=ntok, trained=len(evaluated.get(t, ())),
            update_tokens=float(upd["tokens"]) if isinstance(upd, dict) and upd.get("tokens") is not None else None))
    ems = tuple(EvalMeasure(cycle_of[e["candidate_id"]], e["dataset"] or cfg.data.name, e["compile_s"],
                            float(e["train_s"]), e["wall_s"])
                for e in evals if e["status"] == "ok" and e["train_s"] is not None
                and (cycle_of[e["candidate_id"]] in finished or cycle_of[e["candidate_id"]] == REFERENCE_CYCLE))
    ref = timings.get(REFERENCE_CYCLE, {}).get("reference")
    warm = records.get(REFERENCE_CYCLE, {}).get("warm_start")
    return RunMeasurement(rd.path, cfg, device, devices, tuple(cycles), ems,
                          float(ref) if ref is not None else None,
                          bool(warm.get("reused")) if isinstance(warm, dict) else None)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The figures and workload fitted to a run, what changed and what could not be fitted, and the run's own
    config predicted with the built-in figures (``before``, with the run's workload) and the fitted ones
    (``after``) beside what was measured (``measured``: mean seconds per cycle per phase, and ``reference``)."""

    measurement: RunMeasurement
    costs: CostModel
    workload: Workload
    changed: Mapping[str, tuple[float, float]]  # figure -> (built-in, calibrated)
    notes: tuple[str, ...]
    before: Prediction
    after: Prediction

    @property
    def measured(self) -> dict[str, float | None]:
        m = self.measurement
        out: dict[str, float | None] = {p: m.mean(p) for p in PHASES}
        out["reference"] = m.reference_s
        return out

    def predicted(self, which: Prediction) -> dict[str, float]:
        out = {p: which.phase(p).seconds for p in PHASES}
        out["reference"] = which.phase("reference").seconds + which.phase("warm_start").seconds
        return out

    def to_dict(self) -> dict[str, Any]:
        before, after = self.predicted(self.before), self.predicted(self.after)
        return {"run_dir": str(self.measurement.run_dir), "device": self.measurement.device,
                "devices_per_host": self.measurement.devices_per_host, "cycles": len(self.measurement.cycles),
                "phases": {k: {"measured": v, "built_in": round(before[k], 3), "calibrated": round(after[k], 3)}
                           for k, v in self.measured.items()},
                "changed": {k: {"built_in": a, "calibrated": b} for k, (a, b) in self.changed.items()},
                "notes": list(self.notes)}


def calibrate(m: RunMeasurement, base: CostModel, workload: Workload | None = None,
              model_params: float | None = None) -> Calibration:
    """Fit ``base`` (the figures of the run's device kind) and ``workload`` to the run ``m``. ``model_params``: the
    run's LLM size (default: counted from the model its config names)."""
    if base.device != m.device:
        raise UserError(f"{m.run_dir} ran on {m.device}; calibrating needs the {m.device} figures, not {base.device}'s")
    cfg, src = m.cfg, f"calibrated from {m.run_dir}"
    llm = cfg.search.generator == "llm"
    params = None
    if llm:
        params = float(model_params) if model_params is not None else float(inputs.model_params(cfg.llm.model.name))
    workers = inputs.workers_per_host(cfg, m.device, m.devices_per_host)
    notes: list[str] = []

    def capacity(tasks: float) -> float:
        used = min(workers, max(1, math.ceil(tasks - 1e-9)))
        return used * base.efficiency(used)

    # -------------------------------------------------------------- the workload
    w = workload or Workload()
    slots = len(m.cycles) * cfg.search.candidates_per_cycle
    gens = sum(c.n_generations for c in m.cycles)
    values: dict[str, Any] = {"generations_per_slot": max(1.0, gens / slots),
                              "trained_share": min(1.0, sum(c.trained for c in m.cycles) / slots)}
    if llm:
        counts = {mo: sum(c.generations[mo] for c in m.cycles) for mo in MODES}
        values["prompt_tokens"] = {mo: (sum(c.prompt_tokens[mo] for c in m.cycles) / counts[mo]) if counts[mo]
                                   else w.prompt_tokens[mo] for mo in MODES}
        values["new_tokens"] = {mo: (sum(c.new_tokens[mo] for c in m.cycles) / counts[mo]) if counts[mo]
                                else w.new_tokens[mo] for mo in MODES}
    cal_w = w.replaced(src, **values)

    # -------------------------------------------------------------- the figures
    fit: dict[str, float] = {}
    if llm:
        expected = 0.0
        for c in m.cycles:
            rows = min(cfg.llm.sampling.batch_size, max(1, c.n_generations))
            expected += (sum(c.prompt_tokens.values()) / base.prefill_rate(params)
                         + sum(c.new_tokens.values()) / base.decode_rate(rows, params))
        measured = sum(c.sample_s for c in m.cycles)
        if expected > 0 and measured > 0:
            f = measured / expected
            fit["prefill_tok_s"] = base.prefill_tok_s / f
            fit["decode_tok_s"] = base.decode_tok_s / f
            notes.append(f"sampling took {f:.2f} x the built-in figures' time: prefill and decoding rates both "
                         "scaled by it (the store does not time them apart)")
    check_work = sum(c.n_generations / capacity(c.n_generations) for c in m.cycles if c.n_generations)
    if check_work > 0:
        fit["check_s"] = max(0.0, sum(c.seconds["generate"] - c.sample_s for c in m.cycles)) / check_work

    shapes = {sh.name: sh for sh in inputs.pool_shapes(cfg)}
    trained = {c.cycle: c.trained for c in m.cycles}
    n_ref = inputs.corpus_size(cfg) * len(shapes)
    step_work = step_time = setup = 0.0
    for e in m.evaluations:
        sh = shapes.get(e.dataset) or inputs.dataset_shape(e.dataset, cfg.data)
        eff = base.efficiency(min(workers, n_ref if e.cycle == REFERENCE_CYCLE else trained.get(e.cycle, 1)))
        steps = cfg.train.seeds * proxy_steps(cfg.train.epochs, sh.steps_per_epoch(cfg.train.batch_size))
        step_work += steps * (sh.height * sh.width / base.step_pixels) * (cfg.train.batch_size / base.step_batch)
        step_time += e.train_s * eff
        other = (e.wall_s - e.train_s) if e.wall_s is not None else e.compile_s
        setup += max(0.0, other or 0.0) * eff
    if m.evaluations and step_work > 0 and step_time > 0:
        fit["step_s"] = step_time / step_work
        fit["compile_s"] = max(setup / len(m.evaluations), 1e-6)
        notes.append(f"step and compile figures from {len(m.evaluations)} proxy evaluation(s); compile_s is their "
                     "wall time beyond training (compile and set-up)")
    else:
        notes.append("no successful proxy evaluation: step_s and compile_s kept")

    if llm and cfg.search.ce_update:
        pts = [(c.update_tokens, c.seconds["update"]) for c in m.cycles if c.update_tokens is not None]
        devices = 1 if m.device == "cpu" else m.devices_per_host
        scale = base.scale(params)
        line = _line(pts)
        if line is not None:
            overhead, per_token = line
            fit["update_overhead_s"] = overhead
            fit["finetune_tok_s"] = scale / (per_token * devices)
            notes.append(f"update: a line through {len(pts)} cycles' (tokens, seconds)")
        elif pts:
            rate = base.finetune_rate(params) * devices
            fit["update_overhead_s"] = max(0.0, sum(s - tok / rate for tok, s in pts) / len(pts))
            notes.append("update: too few distinct token counts for a line; finetune_tok_s kept, the fixed cost fitted")
    notes.append("not recorded, so kept: llm_load_s, pool_efficiency")
    costs = base.replaced({k: (int(round(v)) if k in ("batch", "step_pixels", "step_batch") else v)
                           for k, v in fit.items()}, src)
    changed = {k: (float(getattr(base, k)), float(getattr(costs, k))) for k in fit}

    warm = _run_warm_start(m)
    before = predict(cfg, base, 1, m.devices_per_host, workload=cal_w, model_params=params, warm=warm,
                     label=str(m.run_dir))
    after = predict(cfg, costs, 1, m.devices_per_host, workload=cal_w, model_params=params, warm=warm,
                    label=str(m.run_dir))
    return Calibration(m, costs, cal_w, changed, tuple(notes), before, after)


def _line(pts: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(intercept, slope) of the least-squares line through ``pts`` when both come out positive (a fixed cost and a
    cost per token); None with fewer than two distinct x."""
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    intercept = my - slope * mx
    return (intercept, slope) if slope > 0 and intercept >= 0 else None


def _run_warm_start(m: RunMeasurement) -> inputs.WarmStart:
    """The run's warm start as it happened: restored (the record says so), trained, or none."""
    cfg = m.cfg
    if cfg.search.generator == "mutation" or not cfg.search.warm_start:
        return inputs.WarmStart("off")
    if m.warm_reused:
        return inputs.WarmStart("cached")
    ws = inputs.warm_start(cfg)
    return dataclasses.replace(ws, status="trained")


def format_calibration(cal: Calibration) -> str:
    """Measured, built-in and calibrated seconds per phase of the run, what changed and what was not fitted."""
    m = cal.measurement
    unit = "core" if m.device == "cpu" else m.device.upper()
    before, after = cal.predicted(cal.before), cal.predicted(cal.after)
    lines = [f"calibrated from {m.run_dir}: {len(m.cycles)} finished cycle(s) on {m.device} ({m.devices_per_host} "
             f"{unit}(s))",
             f"  {'phase':<11} {'measured':>9} {'built-in':>9} {'calibrated':>10}   (seconds per cycle; reference: once)"]
    for k, v in cal.measured.items():
        meas = f"{v:>9.1f}" if v is not None else f"{'-':>9}"
        lines.append(f"  {k:<11} {meas} {before[k]:>9.1f} {after[k]:>10.1f}")
    if cal.changed:
        lines.append("  figures: " + ", ".join(f"{k} {a:.4g} -> {b:.4g}" for k, (a, b) in cal.changed.items()))
    w = cal.workload
    lines.append(f"  workload: {w.generations_per_slot:.2f} generations per slot, {w.trained_share:.0%} of slots "
                 "trained, prompt tokens " + "/".join(f"{w.prompt_tokens[mo]:,.0f}" for mo in MODES)
                 + ", new tokens " + "/".join(f"{w.new_tokens[mo]:,.0f}" for mo in MODES) + " (full/delta)")
    lines.extend(f"  - {n}" for n in cal.notes)
    return "\n".join(lines)
