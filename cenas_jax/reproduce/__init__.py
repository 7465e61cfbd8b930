"""Reproduce the paper's figures and tables: ``cenas reproduce small`` (``make reproduce-small``, a 2-core CPU)
and ``cenas reproduce paper`` (``make reproduce``, the paper's scale).

``small`` runs every experiment with the embedded SmolLM2-135M and the embedded digits data, sized to
finish within 2 hours on a 2-core CPU (each LLM run carries a wall-clock cap, ``search.max_wall_s``; a
capped run stops at a phase boundary with what it has, and the summary says so):

- ``fig2_delta_vs_full``: one mixed run, 4 cycles × 44 slots = ≥ 88 generations per
  mode (87 tell a 0.71 valid rate from 0.51 at α = 0.05, power 0.8);
- ``fig1_convergence``: 6 cycles × 12, the CE baseline of the next three;
- ``ablation_novelty`` (novelty filter off), ``controls_frozen`` (no CE update),
  ``controls_mutation`` (random-mutation generator, no LLM): the same 6 × 12;
- ``table_proxy_reliability``: ``cenas proxy-snr`` on 10 corpus programs, with the
  ceiling effect of the fig1 run;
- ``retrain``: the fig1 run's top 10 and the corpus at 10 epochs on the test split;
- ``cenas report`` for every run, then ``SUMMARY.md`` and its figures, our numbers
  beside the paper's (``report/summary_read.py`` reads them into ``report/summary.py``'s
  ``Summary``, ``report/summary_render.py`` writes it).

Every step is restartable: a finished run is skipped, an interrupted one resumed
(``cenas resume``), proxy-snr and retrain outputs are reused when present.

``paper`` is the paper's scale: 22 cycles × 50 candidates per LLM (three LLMs: the
fig1 and fig2 runs for each, the ablation and the frozen control for the first, the
mutation control once), six datasets, 50-epoch retrain; ``--check`` checks what it
needs (data of the six datasets, Llama-family checkpoints, accelerators, free disk),
prints the plan with the GPU-hours of DESIGN.md §8's 30-60 s per generate-and-train
step, and ``cenas plan``'s prediction of every search run (seconds per phase, the
dominant phase) and of the total device-hours (``costs.py``), and exits (1 when
something is missing) without running;
``--smoke`` is a minutes-long version on one GPU. Exit codes: 0 done, 1 something
missing or a step failed, 2 bad arguments.

Modules: ``plan.py`` (the plans and their cost), ``costs.py`` (the paper plan's predicted cost),
``checks.py`` (what the paper scale needs),
``execute.py`` (running a plan, the step log, the two commands).
"""
