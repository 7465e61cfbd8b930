"""A re-entrant, thread-safe swap of one module attribute, for the trainer's fast paths."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class ReentrantPatch:
    """``with patch(enabled):`` sets ``module.attr`` to ``replacement`` while any holder is inside.

    Nested and concurrent holders share one swap; the original comes back when the last
    one leaves, also on an exception.
    """

    def __init__(self, module: Any, attr: str, replacement: Any) -> None:
        self.module, self.attr, self.replacement = module, attr, replacement
        self.original = getattr(module, attr)
        self._lock = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self, enabled: bool = True) -> Iterator[None]:
        if not enabled:
            yield
            return
        with self._lock:
            self._depth += 1
            setattr(self.module, self.attr, self.replacement)
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    setattr(self.module, self.attr, self.original)
