"""Progress displays: a tqdm bar on a terminal, plain lines at a steady rate anywhere else.

tqdm redraws its bar with carriage returns; written to a log file or a pipe they pile up into
one enormous line. When the stream is not a terminal, ``progress_bar`` returns a ``PlainProgress``
instead: the same small interface (iterate, ``update``, ``set_postfix``, ``close``), printing one
ordinary line at most every ``interval_s`` seconds (``CENAS_PROGRESS_INTERVAL``, default 30) and
one when it closes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    """Seconds between plain progress lines (``CENAS_PROGRESS_INTERVAL``; default 30)."""
    try:
        v = float(os.environ.get("CENAS_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return v if v >= 0 else DEFAULT_INTERVAL_S


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


class PlainProgress:
    """Progress as plain lines (no carriage returns): ``desc: n/total unit (rate/s) postfix``."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", file: TextIO | None = None, interval: float | None = None,
                 clock=time.monotonic) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.interval = interval_s() if interval is None else interval
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.t0 = clock()
        self._last = self.t0
        self._printed: tuple[int, str] | None = None  # (n, postfix) of the last line printed
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for x in self.iterable or ():
                yield x
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self) -> str:
        secs = self.clock() - self.t0
        of = f"/{self.total}" if self.total is not None else ""
        rate = f", {self.n / secs:.2f} {self.unit}/s" if secs > 0 and self.n else ""
        post = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}{of} {self.unit} ({secs:.0f}s{rate}{post})"

    def _maybe_print(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last >= self.interval:
            self._last = now
            self._printed = (self.n, self.postfix)
            print(self.line(), file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        self._maybe_print()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kw: Any) -> None:
        items = {**(ordered_dict or {}), **kw}
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in items.items()))

    def refresh(self) -> None:
        self._maybe_print()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if (self.n or self.postfix) and self._printed != (self.n, self.postfix):  # the final state, once
                self._maybe_print(force=True)


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 leave: bool = False, file: TextIO | None = None, **tqdm_kw: Any) -> Any:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a ``PlainProgress``."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream, **tqdm_kw)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, file=stream)
