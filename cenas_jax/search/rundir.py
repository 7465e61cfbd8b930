"""Moved to ``cenas_jax/rundir.py``: the report and the live view read the run directory too, and they import
nothing of ``search/``. This alias keeps ``retrain.py`` working until its import moves."""

from cenas_jax.rundir import (  # noqa: F401 -- re-exported names
    LOCK_NAME,
    PHASE_ORDER,
    PHASES,
    STATE_VERSION,
    LoopState,
    RunDir,
    RunLock,
    build_manifest,
    lock_holder,
    lock_run_dir,
    write_atomic,
)
