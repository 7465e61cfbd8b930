"""The search: where the LLM wing and the evaluation wing meet (DESIGN.md §1).

One module per step of a cycle: ``prompts`` (templates in ``templates/``),
``delta`` (edit formats and code extraction), ``novelty`` (MinHash filter),
``elites`` (the CE rule, parent draws, per-dataset quality), ``update`` (the
CE update's pairs); the phases that run them over a run's store: ``generate``,
``evaluate`` (reference, train, select) and ``ce_update`` (update, warm start),
stopped by ``stopping``; and ``loop``, which drives the cycles.
Import the submodules directly; this package file imports nothing, so the
pure-Python steps load without JAX or the LLM.
"""
