"""The fixed taxonomy of candidate failures (DESIGN.md §3), the exception that carries one, and ``SandboxError``."""

from __future__ import annotations

import enum


class ErrorKind(str, enum.Enum):
    """Why a candidate failed; the value is the string stored in records and the run store."""

    SYNTAX = "syntax"  # the source does not parse
    POLICY = "policy"  # the static policy (or the guarded import) refused it
    BUILD = "build"  # executing the source or instantiating ``Net`` failed
    SHAPE = "shape"  # tracing the forward pass failed or the output is not (B, num_classes)
    BUDGET = "budget"  # too many parameters
    COMPILE = "compile"  # XLA compilation failed
    EXPORT = "export"  # the exported programs were refused (custom calls off the allow-list, wrong signatures)
    NAN = "nan"  # the training loss became NaN/Inf
    TIMEOUT = "timeout"  # the wall-clock limit ran out
    MEMORY = "memory"  # the memory limit was hit
    CRASH = "crash"  # the worker process died or raised unexpectedly
    DELTA_APPLY = "delta_apply"  # an edit did not apply to its parent
    DUPLICATE = "duplicate"  # refused by the novelty filter

    def __str__(self) -> str:
        return self.value


ALL_KINDS: tuple[str, ...] = tuple(k.value for k in ErrorKind)


class CandidateError(Exception):
    """A candidate failed at one stage; ``kind`` is an ``ErrorKind``, ``message`` says why (and where)."""

    def __init__(self, kind: ErrorKind | str, message: str, lineno: int | None = None) -> None:
        self.kind = ErrorKind(kind)
        self.message = message
        self.lineno = lineno  # line of the candidate source, when known
        super().__init__(f"{self.kind.value}: {message}")

    def __reduce__(self):  # picklable across the worker pipe
        return (CandidateError, (self.kind.value, self.message, self.lineno))


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (workers fail to start): an environment problem, not a candidate's."""
