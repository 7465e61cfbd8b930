"""The matplotlib set-up every figure of the package goes through (run report, proxy-SNR plots, summaries)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures are written to files, never shown, and no display is
    needed. matplotlib is imported here, on the first figure, not when a module that draws is imported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def integer_ticks(*axes) -> None:
    """Whole-number ticks on the x axis of each of ``axes`` (cycles: no cycle 2.5)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Lay the figure out, write it as a PNG (its folder made when missing) and free it."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
