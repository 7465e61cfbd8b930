"""Multi-host runs through ``jax.distributed`` (``cenas run CONFIG --distributed``; DESIGN.md §7 "Many hosts")."""
