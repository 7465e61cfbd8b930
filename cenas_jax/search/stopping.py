"""Stopping a run at a checkpoint: Ctrl-C, SIGTERM (a preemption) and the wall-time and token budgets (DESIGN.md §1).

The long work of a cycle (a sampling batch, a CE update, proxy trainings) runs in *abandonable* sections: a
stop raises ``StopRequested`` out of them at once (Ctrl-C), or after ``search.preempt_grace_s`` (SIGTERM), and
the phase redoes that work on resume. Recording a result and writing a checkpoint are *finishing* sections: a
stop waits for them, so no record or checkpoint is half-written by a stop. Everywhere else a stop is honoured
at the next ``StopControl.check``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cenas_jax.config import SearchConfig


class StopRequested(Exception):
    """Raised between units of work when a stop (Ctrl-C, SIGTERM, budget) was asked for.

    ``external``: raised from outside the ``StopControl`` (a lost process of a distributed run,
    ``distributed.group.PeerLost``): the run is interrupted, as by a signal."""

    external = False


class StopControl:
    """The stop state of one ``SearchLoop.run``: why it stops (``reason``), whether a stop abandoned work in
    flight (``abandoned_work``), and the token budget's count (``tokens_used``, added to by the generate phase).
    The wall-time budget runs from this object's creation."""

    def __init__(self, search: SearchConfig, echo: Callable[[str], None]) -> None:
        self.search = search
        self.echo = echo
        self.reason: str | None = None
        self.abandoned_work = False  # a stop abandoned work in flight (device computations may still run)
        self.tokens_used = 0
        self._abandon_ok = False  # inside an ``abandonable`` section: a stop raises StopRequested at once
        self._t_start = time.time()

    @property
    def requested(self) -> bool:
        return self.reason is not None

    @property
    def by_signal(self) -> bool:
        """Whether Ctrl-C or SIGTERM (not a budget) stopped the run."""
        return self.reason is not None and (self.reason == "interrupt" or self.reason.startswith("SIGTERM"))

    def install_signals(self) -> dict:
        """Ctrl-C and SIGTERM stop the run at the next checkpoint. SIGTERM is how Slurm, Kubernetes and TPU
        preemption say "you have seconds": the work in flight gets ``search.preempt_grace_s``, then it is
        abandoned (SIGALRM raises ``StopRequested``; the phase redoes it on resume). Ctrl-C abandons it at
        once. Only work in an ``abandonable`` section (sampling, a CE update, evaluations) is abandoned;
        recording and checkpointing (``finishing``, and everything outside those sections) end first.
        Returns the handlers it replaced, for ``restore_signals``."""

        def on_int(signum: int, frame: Any) -> None:
            if self.reason == "interrupt":  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.reason = "interrupt"
            if self._abandon_ok:
                self.echo("\nCtrl-C: stopping; the work in flight is dropped (resume redoes it), then checkpointing")
                raise StopRequested(self.reason)
            self.echo("\nCtrl-C: finishing the step in flight, then checkpointing (press again to abort)")

        def on_term(signum: int, frame: Any) -> None:
            if self.reason is not None and self.reason.startswith("SIGTERM"):
                return
            self.reason = "SIGTERM (preemption)"
            grace = self.search.preempt_grace_s
            self.echo(f"\nSIGTERM: finishing the work in flight for at most {grace:g} s, then checkpointing")
            if grace > 0:
                signal.setitimer(signal.ITIMER_REAL, grace)
            else:
                on_alarm(signal.SIGALRM, frame)

        def on_alarm(signum: int, frame: Any) -> None:
            self.reason = f"SIGTERM (preemption; the work in flight abandoned after {self.search.preempt_grace_s:g} s)"
            if self._abandon_ok:
                raise StopRequested(self.reason)
            # In a step that must finish (recording, a checkpoint: seconds at most): the next check stops.

        old = {}
        try:
            for sig, fn in ((signal.SIGINT, on_int), (signal.SIGTERM, on_term), (signal.SIGALRM, on_alarm)):
                old[sig] = signal.signal(sig, fn)
        except ValueError:  # not in the main thread
            pass
        return old

    @staticmethod
    def restore_signals(old: dict) -> None:
        if old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, fn in old.items():
            signal.signal(sig, fn)

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """Long work a stop may abandon at once: it is recorded only when it ends, and redone on resume."""
        prev, self._abandon_ok = self._abandon_ok, True
        try:
            self.check()
            yield
        except (StopRequested, KeyboardInterrupt):
            # XLA may still be running what was abandoned (JAX dispatches asynchronously): the CLI then ends
            # the process without the interpreter's finalisation, which crashes under a running computation
            # (measured: SIGSEGV at exit after a Ctrl-C in a real sampling batch or CE update).
            self.abandoned_work = True
            raise
        finally:
            self._abandon_ok = prev

    @contextmanager
    def finishing(self) -> Iterator[None]:
        """A short step that must end once started (recording a result): a stop waits for it."""
        prev, self._abandon_ok = self._abandon_ok, False
        try:
            yield
        finally:
            self._abandon_ok = prev

    def check(self) -> None:
        """Raise ``StopRequested`` when a stop was asked for or a budget (wall time, tokens) is spent."""
        s = self.search
        if self.reason is None and s.max_wall_s is not None and time.time() - self._t_start > s.max_wall_s:
            self.reason = f"wall-time budget {s.max_wall_s:.0f}s reached"
        if self.reason is None and s.max_tokens is not None and self.tokens_used >= s.max_tokens:
            self.reason = f"token budget {s.max_tokens} reached"
        if self.reason is not None:
            raise StopRequested(self.reason)
