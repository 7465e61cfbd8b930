"""Errors the proxy trainer raises; the sandbox maps ``kind`` to its own taxonomy."""

from __future__ import annotations


class TrainError(Exception):
    """A candidate failed during proxy training.

    ``kind`` is one of ``"nan"`` (non-finite training loss), ``"compile"``
    (tracing, lowering or XLA compilation failed) or ``"shape"`` (the logits
    are not ``(batch, num_classes)``); ``message`` says what happened.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
