"""``cenas plan``'s model: a config's work per cycle and per run, times a ``CostModel``, over hosts and devices.

Per cycle (DESIGN.md §1's phases):

- generate = the prompts' prefill + the new tokens, at the config's sampling batch (each host samples its share),
  + the cheap checks of every generation, spread over the sandbox workers;
- train = trained candidates x (compile + seeds x steps per epoch x epochs x step time), spread over the
  evaluation workers of every host;
- select: milliseconds (0);
- update = a fixed cost + fine-tuning epochs x the tokens of the elites' and replayed pairs (within the update's
  token budget) / the fine-tuning rate of all the hosts' devices.

Once per run: loading the LLM, the reference phase (the seed corpus trained on every dataset of the pool) and the
warm start (unless a shipped or cached adapter matches its key). What a run's generations look like (tokens per
answer, resampled and trained shares) is a ``Workload``: defaults from measured runs, or calibrated from a finished
run (``plan/calibrate.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from cenas_jax.config import RunConfig
from cenas_jax.errors import UserError
from cenas_jax.plan import inputs
from cenas_jax.plan.costs import FIELDS, CostModel
from cenas_jax.report.fmt import duration
from cenas_jax.search.update import replay_count

PHASES = ("generate", "train", "select", "update")
ONCE = ("llm_load", "reference", "warm_start")


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a cycle's generations look like: slots resampled (``generations_per_slot``), slots that end in a
    trained candidate (``trained_share``), prompt and answer tokens per generation by mode; with ``sources``."""

    generations_per_slot: float = 1.0
    trained_share: float = 1.0
    prompt_tokens: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"full": 678.0, "delta": 696.0})
    new_tokens: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"full": 371.0, "delta": 121.0})
    sources: Mapping[str, str] = dataclasses.field(compare=False, default_factory=lambda: {
        "generations_per_slot": "assumption: no slot is resampled (the quickstart run of 2026-12-04: 13 generations "
                                "for 12 slots)",
        "trained_share": "assumption: every slot ends in a trained candidate, an upper bound on training (the "
                         "quickstart trained 0-2 of 12 a cycle; the delta paper's 7B LLMs were 67-75% valid, "
                         "DESIGN.md §8)",
        "prompt_tokens": "measured: SmolLM2's tokenizer on prompts showing each corpus program, full 491-851 "
                         "(mean 678), delta 509-869 (mean 696) (DESIGN.md §4)",
        "new_tokens": "measured: SmolLM2-135M's answers to 16 quickstart prompts at temperature 0.7 (make "
                      "bench-llm): 371 tokens per full answer, 121 per delta answer; at most sampling.max_new_tokens",
    })

    def __post_init__(self) -> None:
        if not self.generations_per_slot >= 1:
            raise UserError(f"generations per slot must be >= 1, got {self.generations_per_slot}")
        if not 0 <= self.trained_share <= 1:
            raise UserError(f"trained share must be in [0, 1], got {self.trained_share}")
        for what in ("prompt_tokens", "new_tokens"):
            d = getattr(self, what)
            if set(d) != {"full", "delta"} or any(not v >= 0 for v in d.values()):
                raise UserError(f"{what} must give 'full' and 'delta' token counts >= 0, got {dict(d)}")

    def replaced(self, source: str, **values: Any) -> Workload:
        srcs = dict(self.sources)
        srcs.update({k: source for k in values})
        return dataclasses.replace(self, **values, sources=srcs)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase's predicted seconds (per cycle, or once per run) and what they are made of, in words."""

    name: str
    seconds: float
    detail: str
    parts: Mapping[str, float] = dataclasses.field(default_factory=dict)  # e.g. sampling / checks of generate


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    device: str
    hosts: int
    devices_per_host: int
    workers_per_host: int
    model: str | None  # None: no LLM (the mutation generator)
    model_params: float | None
    cycles: int
    cycle: tuple[Phase, ...]
    once: tuple[Phase, ...]
    costs: CostModel
    workload: Workload
    assumptions: tuple[str, ...]
    max_wall_s: float | None = None

    def phase(self, name: str) -> Phase:
        return next(p for p in (*self.cycle, *self.once) if p.name == name)

    @property
    def cycle_s(self) -> float:
        return sum(p.seconds for p in self.cycle)

    @property
    def once_s(self) -> float:
        return sum(p.seconds for p in self.once)

    def share(self, name: str) -> float:
        """A cycle phase's share of the cycle (0 for an empty cycle)."""
        total = self.cycle_s
        return self.phase(name).seconds / total if total > 0 else 0.0

    @property
    def dominant(self) -> str:
        """The cycle phase that takes the most time."""
        return max(self.cycle, key=lambda p: p.seconds).name

    @property
    def uncapped_wall_s(self) -> float:
        return self.once_s + self.cycles * self.cycle_s

    @property
    def cycles_run(self) -> int:
        """Cycles that finish before ``search.max_wall_s`` stops the run (all of them without a cap)."""
        if self.max_wall_s is None or self.uncapped_wall_s <= self.max_wall_s or self.cycle_s <= 0:
            return self.cycles
        return max(0, min(self.cycles, math.floor((self.max_wall_s - self.once_s) / self.cycle_s)))

    @property
    def wall_s(self) -> float:
        """The run's predicted wall time: ``search.max_wall_s`` when it stops the run earlier."""
        w = self.uncapped_wall_s
        return min(w, self.max_wall_s) if self.max_wall_s is not None else w

    @property
    def devices(self) -> int:
        return self.hosts * self.devices_per_host

    @property
    def device_hours(self) -> float:
        """Hosts x devices per host (cores on ``cpu``) x the wall time, in hours."""
        return self.devices * self.wall_s / 3600

    def dominance(self) -> str:
        """Which phase dominates, in words."""
        if self.cycle_s <= 0:
            return "No phase takes measurable time."
        dom = self.phase(self.dominant)
        share = self.share(dom.name)
        words = {"generate": "the LLM's sampling and the cheap checks", "train": "the proxy training of the candidates",
                 "select": "the elite selection", "update": "the CE update (LoRA fine-tuning)"}[dom.name]
        out = f"The {dom.name} phase dominates: {share:.0%} of each cycle goes to {words}"
        if dom.parts and len(dom.parts) > 1:
            out += " (" + ", ".join(f"{k} {v / self.cycle_s:.0%}" for k, v in dom.parts.items()) + ")"
        out += "."
        if self.once_s > self.cycles * self.cycle_s:
            biggest = max(self.once, key=lambda p: p.seconds)
            out += (f" The one-off phases ({duration(self.once_s)}, mostly {biggest.name.replace('_', ' ')}) take "
                    f"longer than the {self.cycles} cycle(s) together.")
        return out

    def to_dict(self) -> dict[str, Any]:
        def ph(p: Phase, per_cycle: bool) -> dict[str, Any]:
            d = {"seconds": round(p.seconds, 3), "detail": p.detail}
            if per_cycle:
                d["share"] = round(self.share(p.name), 4)
            if p.parts:
                d["parts"] = {k: round(v, 3) for k, v in p.parts.items()}
            return d

        return {
            "label": self.label, "device": self.device, "hosts": self.hosts, "devices_per_host": self.devices_per_host,
            "workers_per_host": self.workers_per_host, "model": self.model, "model_params": self.model_params,
            "cycles": self.cycles, "cycles_run": self.cycles_run,
            "per_cycle": {p.name: ph(p, True) for p in self.cycle}, "cycle_s": round(self.cycle_s, 3),
            "once": {p.name: ph(p, False) for p in self.once}, "once_s": round(self.once_s, 3),
            "dominant": self.dominant, "dominance": self.dominance(),
            "wall_s": round(self.wall_s, 3), "device_hours": round(self.device_hours, 4),
            "max_wall_s": self.max_wall_s,
            "figures": self.costs.to_dict(),
            "workload": {"generations_per_slot": self.workload.generations_per_slot,
                         "trained_share": self.workload.trained_share,
                         "prompt_tokens": dict(self.workload.prompt_tokens),
                         "new_tokens": dict(self.workload.new_tokens),
                         "sources": dict(self.workload.sources)},
            "assumptions": list(self.assumptions),
        }


def delta_fraction(cfg: RunConfig) -> float:
    """The share of a cycle's slots that are delta edits (as ``GeneratePhase.slots`` assigns them)."""
    s = cfg.search
    n = s.candidates_per_cycle
    return {"full": 0, "delta": n, "mixed": int(round(n * s.delta_share))}[s.mode] / n


def proxy_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps of a proxy training (as ``train/proxy._schedule`` counts them: at least one)."""
    return max(1, int(math.floor(epochs * steps_per_epoch + 1e-9)))


def predict(cfg: RunConfig, costs: CostModel, hosts: int = 1, devices_per_host: int = 1, *,
            workload: Workload | None = None, model_params: float | None = None,
            warm: inputs.WarmStart | None = None, corpus: int | None = None, label: str = "") -> Prediction:
    """Predict one cycle's seconds per phase and the run's wall time and device-hours.

    ``model_params``: the LLM's parameter count (default: counted from the configured model's files);
    ``warm``: the warm start (default: looked up as the loop would); ``corpus``: programs in the seed corpus
    (default: the run's). ``hosts`` x ``devices_per_host`` GPUs or TPU chips, or cores on ``cpu``."""
    if hosts < 1 or devices_per_host < 1:
        raise UserError(f"hosts and devices per host must be >= 1, got {hosts} and {devices_per_host}")
    w = workload or Workload()
    s, sampling = cfg.search, cfg.llm.sampling
    llm = s.generator == "llm"
    params = None
    if llm:
        params = float(model_params) if model_params is not None else float(inputs.model_params(cfg.llm.model.name))
    workers = inputs.workers_per_host(cfg, costs.device, devices_per_host)
    total_workers = hosts * workers

    def capacity(tasks: float) -> float:
        """Workers busy on ``tasks`` parallel tasks, times their per-worker throughput."""
        used = min(total_workers, max(1, math.ceil(tasks - 1e-9)))
        return used * costs.efficiency(math.ceil(used / hosts))

    # -------------------------------------------------------------- generate
    slots = s.candidates_per_cycle
    d = delta_fraction(cfg)
    caps = {"full": sampling.max_new_tokens, "delta": sampling.max_new_tokens_delta or sampling.max_new_tokens}
    prompt_tok = d * w.prompt_tokens["delta"] + (1 - d) * w.prompt_tokens["full"]
    new_tok = d * min(w.new_tokens["delta"], caps["delta"]) + (1 - d) * min(w.new_tokens["full"], caps["full"])
    gens = slots * w.generations_per_slot
    parts: dict[str, float] = {}
    if llm:
        per_host = gens / hosts
        rows = min(sampling.batch_size, max(1, math.ceil(per_host - 1e-9)))
        prefill_r, decode_r = costs.prefill_rate(params), costs.decode_rate(rows, params)
        parts["sampling"] = per_host * prompt_tok / prefill_r + per_host * new_tok / decode_r
        sample_detail = (f"{gens:,.0f} generations, {per_host * prompt_tok:,.0f} prompt tokens at {prefill_r:,.0f}/s + "
                         f"{per_host * new_tok:,.0f} new tokens at {decode_r:,.0f}/s ({rows} rows)"
                         + (" per host" if hosts > 1 else ""))
    else:
        sample_detail = f"{gens:,.0f} random mutations (no LLM)"
    parts["checks"] = gens * costs.check_s / capacity(gens)
    generate = Phase("generate", sum(parts.values()), f"{sample_detail}; cheap checks {parts['checks']:.1f} s",
                     parts)

    # -------------------------------------------------------------- train
    shapes = inputs.pool_shapes(cfg)
    tc = cfg.train

    def training_s(shape: inputs.DatasetShape) -> float:
        steps = proxy_steps(tc.epochs, shape.steps_per_epoch(tc.batch_size))
        return costs.compile_s + tc.seeds * steps * costs.step_seconds(shape.height, shape.width, tc.batch_size)

    per_candidate = sum(training_s(sh) for sh in shapes) / len(shapes)  # a candidate trains on one dataset
    trained = slots * w.trained_share
    train = Phase("train", trained * per_candidate / capacity(trained) if trained > 0 else 0.0,
                  f"{trained:,.3g} candidates x {per_candidate:,.1f} s (compile {costs.compile_s:.3g} s + "
                  f"{tc.seeds} seed(s) x {_steps_words(shapes, tc.epochs, tc.batch_size)}) on "
                  f"{min(total_workers, max(1, math.ceil(trained - 1e-9)))} of {total_workers} worker(s)")

    select = Phase("select", 0.0, "elite selection (milliseconds)")

    # -------------------------------------------------------------- update
    update_devices = hosts if costs.device == "cpu" else hosts * devices_per_host
    tok_pair = prompt_tok + new_tok
    if llm and s.ce_update:
        elites = max(1, math.ceil(s.elite_rho * trained - 1e-9))
        if s.max_elites is not None:
            elites = min(elites, s.max_elites)
        pairs = elites + replay_count(elites, s.replay_weight)
        kept = max(1, min(pairs, math.floor(s.update_token_budget / tok_pair))) if tok_pair > 0 else pairs
        passes = _passes(cfg, kept)
        fed = passes * kept * tok_pair
        rate = costs.finetune_rate(params) * update_devices
        made = f"{elites} elite(s) + {pairs - elites} replayed"
        which = f"the token budget keeps {kept} of {made}" if kept < pairs else made
        update = Phase("update", costs.update_overhead_s + fed / rate,
                       f"{kept} pairs ({which}) of ~{tok_pair:,.0f} tokens x {passes:g} pass(es) at {rate:,.0f} tok/s "
                       f"+ {costs.update_overhead_s:.3g} s fixed")
    else:
        update = Phase("update", 0.0, "no CE update (" + ("no LLM" if not llm else "search.ce_update: false") + ")")

    # -------------------------------------------------------------- once per run
    load = Phase("llm_load", costs.load_seconds(params) if llm else 0.0,
                 f"loading {cfg.llm.model.name}" if llm else "no LLM")
    n_corpus = inputs.corpus_size(cfg) if corpus is None else corpus
    ref_tasks = n_corpus * len(shapes)
    reference = Phase("reference", n_corpus * sum(training_s(sh) for sh in shapes) / capacity(ref_tasks),
                      f"{n_corpus} corpus programs x {len(shapes)} dataset(s) trained")
    ws = warm if warm is not None else (inputs.warm_start(cfg) if llm else inputs.WarmStart("off"))
    if ws.status == "trained":
        rate = costs.finetune_rate(params) * update_devices
        warm_phase = Phase("warm_start", costs.update_overhead_s + ws.passes * ws.tokens / rate,
                           f"{ws.pairs} corpus pairs, ~{ws.tokens:,.0f} tokens x {ws.passes} pass(es) at "
                           f"{rate:,.0f} tok/s + {costs.update_overhead_s:.3g} s fixed")
    else:
        warm_phase = Phase("warm_start", 0.0, {"off": "none", "shipped": "the shipped adapter for its key, restored",
                                               "cached": "the cached adapter for its key, restored"}[ws.status])

    assumptions = _assumptions(cfg, costs, w, hosts, devices_per_host, workers, params, shapes, ws)
    return Prediction(label=label, device=costs.device, hosts=hosts, devices_per_host=devices_per_host,
                      workers_per_host=workers, model=cfg.llm.model.name if llm else None, model_params=params,
                      cycles=s.cycles, cycle=(generate, train, select, update), once=(load, reference, warm_phase),
                      costs=costs, workload=w, assumptions=tuple(assumptions), max_wall_s=s.max_wall_s)


def _passes(cfg: RunConfig, pairs: int) -> float:
    """Passes over the update's pairs: ``finetune.epochs``, fewer when ``finetune.max_steps`` stops it first."""
    ft = cfg.llm.finetune
    if ft.max_steps is None:
        return ft.epochs
    return min(ft.epochs, ft.max_steps / math.ceil(pairs / ft.batch_size))


def _steps_words(shapes: Sequence[inputs.DatasetShape], epochs: float, batch: int) -> str:
    sh = shapes[0]
    more = f", {len(shapes) - 1} more dataset(s)" if len(shapes) > 1 else ""
    return (f"{proxy_steps(epochs, sh.steps_per_epoch(batch)):,} steps on {sh.name} "
            f"{sh.height}x{sh.width}x{sh.channels}{more}")


def _assumptions(cfg: RunConfig, costs: CostModel, w: Workload, hosts: int, devices_per_host: int, workers: int,
                 params: float | None, shapes: Sequence[inputs.DatasetShape], ws: inputs.WarmStart) -> list[str]:
    out = []
    if params is not None:
        ref = "the measured SmolLM2-135M figures" if costs.device == "cpu" else f"the {costs.device}'s figures"
        out.append(f"LLM costs scale linearly with the parameter count: {params:,.0f} / {costs.ref_params:,.0f} = "
                   f"{costs.scale(params):.3g} x the per-token cost and load time of {ref}")
    if costs.device == "cpu":
        out.append(f"--devices-per-host counts cores on cpu: {workers} single-threaded sandbox worker(s) per host; "
                   "sampling and fine-tuning use a host's cores together at this 2-core machine's rates (not scaled "
                   "with cores)")
    else:
        out.append(f"{workers} sandbox worker(s) per host on {devices_per_host} {costs.device.upper()}(s) "
                   "(candidates/placement.py); the LLM samples on one device per host")
    if hosts > 1:
        out.append("several hosts (DESIGN.md §7): each samples its share of the prompts and evaluates its share of "
                   "the candidates on its own workers; the CE update and the warm start run over every device of "
                   "every host")
    out.append("proxy steps scale linearly with the image's pixels (height x width) and the batch; one compile per "
               "candidate; a candidate trains on one dataset of the pool")
    out.append("training examples: " + ", ".join(
        f"{sh.name} {sh.train_examples:,} ({sh.height}x{sh.width}x{sh.channels})" for sh in shapes)
        + " (nominal sizes of the named datasets, after the validation split)")
    out.append(f"generations: {w.generations_per_slot:.3g} per slot ({w.sources.get('generations_per_slot', '')})")
    out.append(f"trained: {w.trained_share:.0%} of the slots ({w.sources.get('trained_share', '')})")
    out.append("tokens per prompt: " + ", ".join(f"{m} {w.prompt_tokens[m]:,.0f}" for m in ("full", "delta"))
               + f" ({w.sources.get('prompt_tokens', '')})")
    out.append("new tokens per answer: " + ", ".join(f"{m} {w.new_tokens[m]:,.0f}" for m in ("full", "delta"))
               + f" ({w.sources.get('new_tokens', '')})")
    if ws.status != "off":
        out.append(f"warm start: {ws.status}" + ("" if ws.model_found else " (the model was not found here, so no adapter "
                                                                          "can be looked up for it)"))
    if cfg.search.max_wall_s is not None:
        out.append(f"search.max_wall_s = {cfg.search.max_wall_s:g} s stops the run at a phase boundary")
    return out


def params_words(n: float) -> str:
    """A parameter count as models are named: 7.6B, 134.5M."""
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:,.1f}M"


def hours_unit(device: str) -> str:
    """What device-hours are counted in: core-hours on cpu, GPU-hours, TPU-hours (chips)."""
    return {"cpu": "core-hours", "gpu": "GPU-hours", "tpu": "TPU-chip-hours"}[device]


def figure(v: float) -> str:
    """A figure as a person reads it: thousands grouped, small ones to 4 significant digits."""
    return f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:.4g}"


def format_prediction(pred: Prediction, title: str | None = None) -> str:
    """The prediction as a table (phase, seconds per cycle, share), the dominant phase in words, the run's wall time
    and device-hours, then every figure with its source and the assumptions."""
    unit = "core" if pred.device == "cpu" else pred.device.upper()
    lines = [title or (f"cenas plan: {pred.label or 'config'} on {pred.device}: {pred.hosts} host(s) x "
                       f"{pred.devices_per_host} {unit}(s), {pred.workers_per_host} sandbox worker(s) per host; "
                       + (f"LLM {pred.model} ({params_words(pred.model_params)} parameters)" if pred.model
                          else "no LLM (mutation generator)"))]
    lines.append(f"  {'phase':<11} {'s/cycle':>9} {'share':>6}  what")
    for p in pred.cycle:
        lines.append(f"  {p.name:<11} {p.seconds:>9.1f} {pred.share(p.name):>6.0%}  {p.detail}")
    lines.append(f"  {'cycle':<11} {pred.cycle_s:>9.1f} {1 if pred.cycle_s else 0:>6.0%}")
    lines.append(f"  {'once':<11} {'seconds':>9}")
    for p in pred.once:
        lines.append(f"  {p.name:<11} {p.seconds:>9.1f} {'':>6}  {p.detail}")
    lines.append(pred.dominance())
    run = (f"run: {pred.cycles} cycle(s) -> wall {duration(pred.wall_s)} ({duration(pred.once_s)} once + "
           f"{pred.cycles_run} x {duration(pred.cycle_s)})")
    if pred.cycles_run < pred.cycles:
        run += f"; search.max_wall_s stops it after about {pred.cycles_run} of {pred.cycles} cycles"
    lines.append(run + f"; {pred.device_hours:,.2f} {hours_unit(pred.device)} ({pred.hosts} x {pred.devices_per_host} "
                 f"{unit}(s) x {duration(pred.wall_s)})")
    lines.append(f"figures ({pred.device}" + ("; ASSUMPTIONS where so labelled" if any(
        pred.costs.is_assumed(k) for k in FIELDS) else "") + "):")
    for k in FIELDS:
        lines.append(f"  {k} = {figure(getattr(pred.costs, k))}: {pred.costs.sources.get(k, '')}")
    lines.append("assumptions:")
    lines.extend(f"  - {a}" for a in pred.assumptions)
    return "\n".join(lines)
