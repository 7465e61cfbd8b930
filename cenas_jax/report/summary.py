"""The reproduction summary (``cenas reproduce``'s SUMMARY.md) as numbers: our results beside the paper's.

Frozen dataclasses, one per figure or table of the paper, with the paper's numbers beside ours, all in a
:class:`Summary`; and :class:`Reproduction`, what a reproduction planned and ran, which is what
``report/summary_read.py`` (``read_summary``) reads a ``Summary`` from, so the summary knows nothing of how the
steps were run. ``report/summary_render.py`` turns a ``Summary`` into Markdown and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cenas_jax.report.analysis import PAPER
from cenas_jax.theory import MannKendallResult

# The delta paper (arXiv 2605.04903), per LLM: delta valid rate and mean first-epoch accuracy (DESIGN.md §8).
PAPER_PER_LLM = (("DeepSeek-Coder-7B-Instruct", 0.753, 0.658), ("Qwen2.5-Coder-7B-Instruct", 0.721, 0.646),
                 ("Mistral-7B-Instruct", 0.666, 0.661))
EXPERIMENTS = ("fig2_delta_vs_full", "fig1_convergence", "ablation_novelty", "controls_frozen", "controls_mutation")


# ---------------------------------------------------------------------------------------------- the input


@dataclass(frozen=True)
class PlannedRun:
    """A search run of the reproduction: where it is (or will be), its planned cycles, its LLM, its state."""

    name: str
    run_dir: Path
    cycles: int  # planned
    llm: str | None = None  # the checkpoint a paper-scale run was given
    state: str | None = None  # state.json's status; None: not started


@dataclass(frozen=True)
class PlannedStep:
    name: str
    est_s: float


@dataclass(frozen=True)
class ExecutedStep:
    """One execution of a step, as the step log records it."""

    step: str
    seconds: float
    rc: int | None
    started: str | None


@dataclass(frozen=True)
class Reproduction:
    """What a reproduction planned and ran: the summary's input."""

    name: str  # e.g. reproduce-small
    scale: str  # one sentence, e.g. "paper scale."
    out: Path
    runs: tuple[PlannedRun, ...]
    steps: tuple[PlannedStep, ...]  # every step, in plan order (the wall-time table)
    proxy_snr_dir: Path
    retrain_json: Path
    step_log: Path
    executed: tuple[ExecutedStep, ...] = ()
    budget_s: float | None = None


# ---------------------------------------------------------------------------------------------- the summary


@dataclass(frozen=True)
class RunStatus:
    name: str
    run_dir: Path
    status: str  # state.json's status, or "not run"
    cycles_done: int
    cycles_planned: int
    generations: int | None  # None: no readable store
    trained: int | None
    seconds: float | None


@dataclass(frozen=True)
class StepTime:
    step: str
    executions: int
    seconds: float  # all executions summed (a resumed run counts each attempt)
    est_s: float
    exit_codes: tuple[int | None, ...]


@dataclass(frozen=True)
class WallTime:
    log: Path
    logged: int  # executions in the step log; 0: no step log (the steps were not run by `cenas reproduce`)
    rows: tuple[StepTime, ...]  # the plan's steps that were executed, in plan order
    total_s: float
    budget_s: float | None
    first_started: str | None

    @property
    def within_budget(self) -> bool | None:
        return None if self.budget_s is None else self.total_s <= self.budget_s


@dataclass(frozen=True)
class ConvergenceRow:
    cycle: int
    generated: int
    trained: int
    accepted: int
    mean_q: float | None
    q_low: float | None
    q_high: float | None
    gamma: float | None


@dataclass(frozen=True)
class EliteMass:
    """C_t per completed cycle with its Wilson CI, against Theorem 3's bound 1−(1−ρ₀)^t."""

    rho0: float
    mass: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    bound: tuple[float, ...]
    holds_within_ci: tuple[bool, ...]

    @property
    def held_after_cycle0(self) -> int:
        return sum(self.holds_within_ci[1:])


@dataclass(frozen=True)
class Convergence:
    """Figure 1 for one CE run: per-cycle quality, the Mann–Kendall trend (Theorem 2), elite mass (Theorem 3)."""

    run: str
    rows: tuple[ConvergenceRow, ...]
    trend: MannKendallResult | None  # None: fewer than 3 cycles with trained candidates
    elite: EliteMass | None
    paper_cycles: int = PAPER["cycles"]
    paper_architectures: int = PAPER["architectures"]


@dataclass(frozen=True)
class Rate:
    """valid / n with its Wilson CI."""

    valid: int
    n: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class ValidRateRow:
    cycle: int
    delta: Rate | None
    full: Rate | None


@dataclass(frozen=True)
class LateCycles:
    """The valid rates pooled over the later half of the cycles (the paper's rates average 22 cycles)."""

    first: int
    last: int
    delta_valid: int
    delta_n: int
    full_valid: int
    full_n: int
    ratio: float | None  # None when either mode has no valid generation there


@dataclass(frozen=True)
class DeltaVsFull:
    """Figure 2: the valid-generation rate of delta vs full-code generation, with Corollary 6's prediction."""

    rows: tuple[ValidRateRow, ...]
    delta: Rate
    full: Rate
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    late: LateCycles | None
    markov_ratio: float | None  # (1−ε̂)^(n̄_δ−n̄_full), ε̂ from our full mode
    eps_hat: float | None
    delta_tokens: float | None
    full_tokens: float | None
    apply_share: float | None  # share of delta failures due to applying the edit
    apply_failures: int
    delta_failures: int
    needed_per_mode: int  # generations per mode to tell the paper's two rates apart (α = 0.05, power 0.8)
    paper_r_delta: float = PAPER["r_delta"]
    paper_r_full: float = PAPER["r_full"]
    paper_ratio: float = PAPER["ratio"]
    paper_ratio_calibrated: float = PAPER["ratio_calibrated_claim"]


@dataclass(frozen=True)
class NoveltyRow:
    cycle: int
    with_similarity: float | None
    with_duplicates: int | None  # None: the run has no such cycle
    without_similarity: float | None
    without_accepted: int | None


@dataclass(frozen=True)
class Ablation:
    """The novelty filter on (fig1_convergence) and off (ablation_novelty): mean pairwise Jaccard per cycle."""

    rows: tuple[NoveltyRow, ...]
    mean_with: float | None
    mean_without: float | None


@dataclass(frozen=True)
class QPoint:
    cycle: int
    mean_q: float | None
    q_low: float | None
    q_high: float | None


@dataclass(frozen=True)
class ControlRun:
    label: str  # e.g. "LLM frozen (controls_frozen)"
    per_cycle: tuple[QPoint, ...]
    valid_rate: float | None
    mean_q: float | None
    best_q: float | None
    p_increasing: float | None
    sen_slope: float | None


@dataclass(frozen=True)
class Controls:
    """The CE run beside the controls that were run (frozen LLM, random mutation)."""

    runs: tuple[ControlRun, ...]


@dataclass(frozen=True)
class RhoComparison:
    name: str  # truth_single, retest, ...
    predicted: float | None
    measured: float | None
    low: float | None
    high: float | None
    p_value: float | None
    paper_spearman: float | None = None  # Qwen's proxy Spearman, beside truth_single


@dataclass(frozen=True)
class CeilingRow:
    cycle: int  # -1: the corpus
    k: int
    sigma2_arch: float | None  # None with snr etc.: no analysis (``note`` says why)
    snr: float | None
    retest_predicted: float | None
    retest_measured: float | None
    analysed: bool
    note: str | None


@dataclass(frozen=True)
class Ceiling:
    run_dir: str
    scores_from: str
    seeds: int
    rows: tuple[CeilingRow, ...]
    trend_s: int | None  # Mann–Kendall on σ²_arch over cycles
    trend_p: float | None
    trend_slope: float | None


@dataclass(frozen=True)
class ProxyReliability:
    """The table of result 6 from ``cenas proxy-snr`` (and its ceiling effect when run with ``--run``)."""

    architectures: int
    seeds: int
    proxy_epochs: float
    truth_epochs: float
    dataset: str
    sigma2_arch: float | None
    sigma2_noise: float | None
    snr: float | None
    snr_low: float | None
    snr_high: float | None
    comparisons: tuple[RhoComparison, ...]
    ceiling: Ceiling | None
    figure: Path  # proxy-snr's own figures, copied beside the summary when they exist
    ceiling_figure: Path

    def comparison(self, name: str) -> RhoComparison | None:
        return next((c for c in self.comparisons if c.name == name), None)


@dataclass(frozen=True)
class Retrain:
    """``cenas retrain``: the proxy's ranking against a long budget on the test split."""

    proxy_epochs: float
    epochs: float
    seeds: int
    retrained: int
    trained: int
    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    spearman_p: float | None
    note: str | None  # why there is no Spearman
    best_accuracy: float | None
    best_id: str | None
    paper_spearman: float  # NNGPT's 1 vs 50 epochs


@dataclass(frozen=True)
class LlmRow:
    llm: str
    run: str
    delta: Rate | None  # None: not run
    mean_q: float | None
    best_accuracy: float | None


@dataclass(frozen=True)
class PerLlm:
    """Paper scale: each LLM's delta run beside the delta paper's per-LLM numbers."""

    rows: tuple[LlmRow, ...]
    paper: tuple[tuple[str, float, float], ...] = PAPER_PER_LLM  # (LLM, delta valid rate, mean first-epoch acc.)


@dataclass(frozen=True)
class Verdicts:
    """The numbers behind the paper's six verdicts, ours; per CE run (fig1, and fig2's mixed run) where it applies."""

    trends: tuple[tuple[str, MannKendallResult], ...]
    accepted: tuple[tuple[str, tuple[int, ...]], ...]  # novel admissions per cycle
    elite_mass: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]  # (run, C_t, bound)
    proxy_run: bool
    snr: float | None
    rho_measured: float | None  # proxy vs truth, one seed
    rho_p: float | None
    rho_predicted: float | None
    ratio_measured: float | None
    ratio_predicted: float | None
    ablation_run: bool  # both fig1_convergence and ablation_novelty were read
    similarity_with: float | None  # mean pairwise Jaccard over cycles, with the novelty filter
    similarity_without: float | None
    paper_qwen_spearman: float = PAPER["qwen_spearman"]


@dataclass(frozen=True)
class Summary:
    name: str
    scale: str
    written: str
    runs: tuple[RunStatus, ...]
    wall_time: WallTime
    fig1: Convergence | None
    fig2_convergence: Convergence | None  # Figure 1's diagnostics on the Figure 2 run
    fig2: DeltaVsFull | None
    ablation: Ablation | None
    controls: Controls | None
    proxy: ProxyReliability | None
    proxy_snr_dir: Path
    retrain: Retrain | None
    per_llm: PerLlm | None
    verdicts: Verdicts
