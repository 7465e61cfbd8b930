"""The plans of ``cenas reproduce``: which ``cenas`` commands reproduce the paper, at which size, at what cost.

``small_plan`` is ``make reproduce-small`` (2-core CPU, within 2 hours), ``paper_plan`` the paper's scale
(or its ``--smoke`` size); ``format_plan`` prints either with its estimated wall time and, for the paper,
its GPU-hours (DESIGN.md §8).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path

from cenas_jax.config import RunConfig, load_config
from cenas_jax.errors import UserError
from cenas_jax.report.fmt import duration
from cenas_jax.rundir import RunDir

# The experiment configs of the checkout the package runs from (one YAML per figure or table).
CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
RUNS = ("fig2_delta_vs_full", "fig1_convergence", "ablation_novelty", "controls_frozen", "controls_mutation")
PAPER_DATASETS = ("cifar10", "cifar100", "mnist", "svhn", "fashion_mnist", "celeba")
SMALL_BUDGET_S = 2 * 3600
# DESIGN.md §8: NNGPT takes 30-60 s per generate-and-train step on an RTX 4090 with a 4-bit 7B model.
STEP_S_PAPER = (30.0, 60.0)
# The training share of such a step: one proxy epoch of a small CNN on a 32x32 dataset (estimate, for
# proxy-snr and retrain, which train without generating).
EPOCH_S_PAPER = 15.0

# Estimated seconds of the small runs on an unloaded 2-core CPU (SmolLM2-135M, digits, 1-epoch proxy):
# a cycle costs about SMALL_S_PER_GENERATION per slot (sampling + checks + training) + SMALL_S_PER_UPDATE
# (the CE update); each run also trains the 10-program corpus (SMALL_S_REFERENCE) and loads the LLM.
SMALL_S_PER_GENERATION = {"llm": 9.0, "mutation": 2.5}
SMALL_S_PER_UPDATE = 75.0
SMALL_S_REFERENCE = 60.0
SMALL_S_LLM_LOAD = 45.0
SMALL_S_WARM_START = 300.0  # the warm start, once: cached in ~/.cache/cenas_jax/warmstart for the other runs
# The caps keep `make reproduce-small` within SMALL_BUDGET_S even when the estimates are optimistic.
# A capped run stops at the next phase boundary (a CE update or a training phase in flight finishes first).
SMALL_CAPS_S = {"fig2_delta_vs_full": 2400, "fig1_convergence": 1080, "ablation_novelty": 1020,
                "controls_frozen": 720, "controls_mutation": 300}
# proxy-snr: 10 corpus programs x 3 seeds x 1 epoch + x 1 seed x 10 epochs (3-4 min measured on a loaded
# 2-core CPU), then the ceiling effect of the fig1 run, which retrains its candidates x 3 seeds (1 epoch).
SMALL_PROXY_SNR_S = 600.0
SMALL_RETRAIN = {"top": 10, "epochs": 10, "seeds": 1}
SMALL_RETRAIN_S = 240.0
# The smoke size checks the pipeline, not the search: six short corpus programs instead of all 33 (each
# run trains its corpus as the reference before cycle 0; 33 programs took 8 minutes on a 2-core CPU).
SMOKE_CORPUS = "[mlp_small, mlp_deep_dropout, all_conv, wide_shallow_cnn, plain_cnn_setup, lenet_bn_relu]"


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of a plan: a search run, a report, proxy-snr, retrain."""

    name: str
    kind: str  # "run" | "report" | "proxy_snr" | "retrain"
    args: tuple[str, ...]  # the `cenas` arguments
    out: Path  # the run directory or output directory the step writes
    est_s: float  # estimated wall seconds
    gpu: bool = False  # counts toward GPU-hours (paper plan)
    steps: int = 0  # generate-and-train steps (search runs)

    def command(self) -> list[str]:
        return ["cenas", *self.args]


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    out: Path
    steps: tuple[Step, ...]
    budget_s: float | None = None  # the wall-clock promise (small)

    def est_s(self) -> float:
        return sum(s.est_s for s in self.steps)

    def runs(self) -> dict[str, Path]:
        return {s.name: s.out for s in self.steps if s.kind == "run"}


def _config_path(name: str) -> Path:
    """``experiments/configs/NAME.yaml`` of the checkout; a clear error when the package runs without one."""
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"cenas reproduce needs the experiment configs of a cenas_jax checkout: {path} not found "
                        "(run it from a clone of the repository, installed with `make install` or `pip install -e .`)")
    return path


def _run_estimate(name: str, overrides: Sequence[str] = ()) -> tuple[float, int, RunConfig]:
    """(seconds, generations, config) of a small run from its config: per-slot and per-update costs."""
    cfg = load_config(_config_path(name), list(overrides))
    s = cfg.search
    gens = s.cycles * s.candidates_per_cycle
    kind = "mutation" if s.generator == "mutation" else "llm"
    est = gens * SMALL_S_PER_GENERATION[kind] + SMALL_S_REFERENCE
    if kind == "llm":
        est += SMALL_S_LLM_LOAD + (s.cycles * SMALL_S_PER_UPDATE if s.ce_update else 0.0)
    return est, gens, cfg


def small_plan(out: str | Path = "runs/reproduce-small") -> Plan:
    """The reproduce-small plan: five runs, their reports, proxy-snr with the ceiling effect, retrain."""
    out = Path(out)
    steps: list[Step] = []
    first_llm = True
    for name in RUNS:
        ov = (f"search.max_wall_s={SMALL_CAPS_S[name]}",)
        est, gens, cfg = _run_estimate(name, ov)
        if first_llm and cfg.search.generator == "llm":
            est += SMALL_S_WARM_START
            first_llm = False
        est = min(est, SMALL_CAPS_S[name] + SMALL_S_REFERENCE)  # the cap stops it (at a phase boundary)
        rd = out / name
        args = ("run", str(_config_path(name)), "--run-dir", str(rd), "--no-progress",
                *[x for o in ov for x in ("--set", o)])
        steps.append(Step(name, "run", args, rd, est, steps=gens))
    fig1 = out / "fig1_convergence"
    psnr = out / "table_proxy_reliability"
    steps.append(Step("table_proxy_reliability", "proxy_snr",
                      ("proxy-snr", str(_config_path("table_proxy_reliability")), "--out", str(psnr),
                       "--run", str(fig1), "--no-progress"), psnr, SMALL_PROXY_SNR_S))
    r = SMALL_RETRAIN
    steps.append(Step("retrain", "retrain",
                      ("retrain", str(fig1), "--top", str(r["top"]), "--epochs", str(r["epochs"]), "--seeds",
                       str(r["seeds"]), "--include-corpus", "--no-progress",
                       "--out", str(out / f"retrain-{r['epochs']}ep.json")),
                      out / f"retrain-{r['epochs']}ep.json", SMALL_RETRAIN_S))
    for name in RUNS:
        steps.append(Step(f"report:{name}", "report", ("report", str(out / name)), out / name / "report", 5.0))
    return Plan("reproduce-small", out, tuple(steps), budget_s=SMALL_BUDGET_S)


def paper_plan(out: str | Path, llms: Sequence[str], data_dir: str | None, smoke: bool = False) -> Plan:
    """The paper-scale plan (or its SMOKE size): per LLM fig1 (delta) + fig2 (mixed); ablation/frozen on LLM 1."""
    out = Path(out)
    llms = list(llms) or ["<LLM 1>", "<LLM 2>", "<LLM 3>"]
    if smoke:
        llms = llms[:1]
    cycles, per = (1, 4) if smoke else (22, 50)
    datasets = paper_datasets(smoke)
    lo, hi = STEP_S_PAPER
    common = [f"search.cycles={cycles}", f"search.candidates_per_cycle={per}", f"data.name={datasets[0]}",
              "search.datasets=[" + ", ".join(datasets) + "]", "search.corpus=" + (SMOKE_CORPUS if smoke else "[]"),
              "llm.sampling.max_new_tokens=1024",
              "llm.sampling.temperature=0.35", "llm.sampling.top_k=50", "llm.sampling.top_p=0.9",
              "llm.sampling.batch_size=16", "llm.lora.rank=32", "llm.lora.alpha=32", "llm.lora.layers=null",
              "llm.finetune.learning_rate=0.00001", "llm.finetune.epochs=3", "search.update_token_budget=40000",
              # a prompt (template + a corpus program, up to ~1k tokens) + up to 1,024 answer tokens
              "llm.finetune.max_seq_len=4096",
              "sandbox.timeout_s=900"]  # DESIGN.md §8: NNGPT's settings
    if data_dir:
        common.append(f"data.data_dir={data_dir}")
    steps: list[Step] = []

    def run(name: str, llm: str | None, tag: str, extra: Sequence[str] = ()) -> None:
        ov = list(common) + list(extra) + ([f"llm.model.name={llm}"] if llm else [])
        rd = out / tag
        n = cycles * per
        steps.append(Step(tag, "run", ("run", str(_config_path(name)), "--run-dir", str(rd), "--no-progress",
                                        *[x for o in ov for x in ("--set", o)]), rd, n * (lo + hi) / 2, gpu=True,
                          steps=n))

    for i, llm in enumerate(llms):
        tag = f"llm{i + 1}"
        run("fig1_convergence", llm, f"fig1_convergence-{tag}", ["search.mode=delta"])
        run("fig2_delta_vs_full", llm, f"fig2_delta_vs_full-{tag}")
        if i == 0 and not smoke:  # the smoke size checks the pipeline: one CE run of each kind is enough
            run("ablation_novelty", llm, f"ablation_novelty-{tag}", ["search.mode=delta"])
            run("controls_frozen", llm, f"controls_frozen-{tag}", ["search.mode=delta"])
    run("controls_mutation", None, "controls_mutation", ["search.mode=delta"])
    k, truth = (4, 2) if smoke else (33, 10)
    for ds in datasets:
        o = out / f"table_proxy_reliability-{ds}"
        ov = [f"data.name={ds}", "proxy_snr.architectures=[]", f"proxy_snr.max_architectures={k}",
              f"proxy_snr.truth_epochs={truth}"] + ([f"data.data_dir={data_dir}"] if data_dir else [])
        est = k * (3 + truth) * EPOCH_S_PAPER  # K archs × (3 proxy seeds + the truth epochs)
        steps.append(Step(f"table_proxy_reliability-{ds}", "proxy_snr",
                          ("proxy-snr", str(_config_path("table_proxy_reliability")), "--out", str(o), "--no-progress",
                           *[x for v in ov for x in ("--set", v)]), o, est, gpu=True))
    top, ep = (3, 2) if smoke else (20, 50)
    for i in range(len(llms)):
        rd = out / f"fig1_convergence-llm{i + 1}"
        steps.append(Step(f"retrain-llm{i + 1}", "retrain",
                          ("retrain", str(rd), "--top", str(top), "--epochs", str(ep), "--no-progress",
                           # a 1 x 4 smoke run may train no candidate: the corpus gives retrain its rows
                           *(("--include-corpus",) if smoke else ()),
                           "--out", str(out / f"retrain-{ep}ep-llm{i + 1}.json")),
                          out / f"retrain-{ep}ep-llm{i + 1}.json", top * ep * EPOCH_S_PAPER, gpu=True))
    for s in [s for s in steps if s.kind == "run"]:
        steps.append(Step(f"report:{s.name}", "report", ("report", str(s.out)), s.out / "report", 10.0))
    return Plan("reproduce-smoke" if smoke else "reproduce", out, tuple(steps))


def paper_datasets(smoke: bool = False) -> tuple[str, ...]:
    """The datasets of the paper plan: all six, or the first for the smoke size."""
    return PAPER_DATASETS[:1] if smoke else PAPER_DATASETS


def planned_config(step: Step) -> RunConfig:
    """The config a run step has (its directory's) or will have (its YAML + overrides)."""
    if (step.out / "config.yaml").is_file():
        return RunDir(step.out).load_config()
    overrides = [step.args[i + 1] for i, x in enumerate(step.args[:-1]) if x == "--set"]
    return load_config(step.args[1], overrides)


def llm_of(step: Step) -> str | None:
    """The checkpoint a paper-plan run step sets with ``--set llm.model.name=...`` (None when it sets none)."""
    return next((a.split("=", 1)[1] for a in step.args if a.startswith("llm.model.name=")), None)


def format_plan(plan: Plan) -> str:
    lines = [f"plan {plan.name} -> {plan.out}"]
    for i, s in enumerate(plan.steps, 1):
        lines.append(f"  {i:2d}. [{s.kind:9s}] ~{duration(s.est_s):>8s}  {shlex.join(s.command())}")
    total = plan.est_s()
    lines.append(f"estimated wall time: {duration(total)}"
                 + (f" (budget {duration(plan.budget_s)})" if plan.budget_s else ""))
    gsteps = sum(s.steps for s in plan.steps if s.gpu)
    if gsteps:
        lo, hi = STEP_S_PAPER
        other = sum(s.est_s for s in plan.steps if s.gpu and s.kind != "run")
        gpu_h = [(gsteps * x + other) / 3600 for x in (lo, hi)]
        lines.append(f"estimated cost: {gsteps:,} generate-and-train steps x {lo:.0f}-{hi:.0f} s (DESIGN.md §8) + "
                     f"{other / 3600:,.0f} h of proxy-snr and retrain training ({EPOCH_S_PAPER:.0f} s per epoch) = "
                     f"{gpu_h[0]:,.1f}-{gpu_h[1]:,.1f} GPU-hours on one GPU (divide by the GPUs of the machine)")
    return "\n".join(lines)

