"""The matplotlib set-up every figure of the package goes through (run report, proxy-SNR plots, summaries)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures are written to files, never shown, and no display is
    needed. matplotlib is imported here, on the first figure, not when a module that draws is imported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
