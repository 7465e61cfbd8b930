"""cenas_jax: iterative LLM-based neural architecture search as a parametric cross-entropy method."""

__version__ = "0.1.0"
