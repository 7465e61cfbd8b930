"""Progress displays: a bar on a terminal, plain lines at a steady rate in logs (no carriage returns)."""

from __future__ import annotations

import io

from cenas_jax.progress import PlainProgress, progress_bar


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_at_the_interval_and_one_at_the_end_with_rate_and_postfix():
    out, clock = io.StringIO(), Clock()
    p = PlainProgress(total=10, desc="train c0", unit="cand", file=out, interval=30, clock=clock)
    p.set_postfix_str("best 0.9")  # before any time passed: no line yet
    for _ in range(10):
        clock.t += 7.0  # one candidate every 7 s: lines at 35 s and 70 s
        p.update(1)
    p.close()  # the last line already shows the final state: nothing more
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["train c0: 5/10 cand (35s, 0.14 cand/s, best 0.9)", "train c0: 10/10 cand (70s, 0.14 cand/s, best 0.9)"]


def test_iterating_reports_and_closes():
    out, clock = io.StringIO(), Clock()
    items = []
    for x in PlainProgress(range(3), desc="d", file=out, interval=1000, clock=clock):
        clock.t += 1
        items.append(x)
    assert items == [0, 1, 2] and out.getvalue() == "d: 3/3 it (3s, 1.00 it/s)\n"


def test_a_terminal_gets_tqdm_anything_else_plain_lines():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    bar = progress_bar(total=2, desc="x", file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(total=2, desc="x", file=io.StringIO()), PlainProgress)


def test_interval_comes_from_the_environment(monkeypatch):
    from cenas_jax.progress import interval_s

    monkeypatch.setenv("CENAS_PROGRESS_INTERVAL", "5")
    assert interval_s() == 5.0
    monkeypatch.setenv("CENAS_PROGRESS_INTERVAL", "soon")
    assert interval_s() == 30.0


def test_close_prints_the_final_state_once_when_the_last_line_is_stale():
    out, clock = io.StringIO(), Clock()
    p = PlainProgress(total=3, desc="s", unit="row", file=out, interval=30, clock=clock)
    clock.t = 31.0
    p.update(1)
    clock.t = 40.0
    p.update(2)
    p.close()
    assert out.getvalue().splitlines() == ["s: 1/3 row (31s, 0.03 row/s)", "s: 3/3 row (40s, 0.07 row/s)"]


def test_sampling_progress_shows_rows_tokens_and_rows_per_second(monkeypatch, capsys):
    from cenas_jax.search.llm_generator import _SamplingProgress

    monkeypatch.setenv("CENAS_PROGRESS_INTERVAL", "0")
    bar = _SamplingProgress(12)
    cb = bar.batch("full", 384)
    cb(2, 64, 700)
    bar.batch_done(6, 1500)
    bar.batch("delta", 128)(3, 32, 90)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("sampling: 2/12 row (") and "full batch step 64/384, 700 tokens" in lines[0]
    assert lines[-1].count(" row/s") == 1  # the rate, once
    assert lines[-1].startswith("sampling: 9/12 row") and "delta batch step 32/128, 1,590 tokens" in lines[-1]
