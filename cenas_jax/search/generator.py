"""The generator p_theta as the loop sees it: sample completions, take a CE update, save/restore.

``save_checkpoint``/``restore_checkpoint`` keep its state in a checkpoint directory with a ``COMPLETE`` marker.

``LLMGenerator`` is the real one (our NNX decoder + LoRA). ``ScriptedGenerator``
replays fixed completions: a test double for the loop's logic only (the real
sampler and fine-tuning have their own tests in tests/test_llm_*).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cenas_jax.errors import UserError


class PromptLike(Protocol):
    system: str
    user: str

    def render_plain(self) -> str: ...


@dataclass(frozen=True)
class Generation:
    """One completion: its text, how many tokens it took, and why it stopped (eos | stop | length)."""

    text: str
    num_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class UpdateResult:
    """What a CE update did: per-step losses, optimiser steps, tokens seen, wall seconds."""

    losses: tuple[float, ...] = ()
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


# on_batch(indices, generations): one finished batch of a ``generate`` call, in the call's indices.
OnBatch = Callable[[list[int], list[Generation]], None]


@runtime_checkable
class Generator(Protocol):
    """What the loop needs from p_theta.

    ``generate(prompts, temperatures, seeds, skip=, on_batch=)`` returns one ``Generation`` per prompt
    (``None`` at the indices in ``skip``). Generation i is a function of (prompt i, temperature i,
    seeds[i], the generator's state) and of how the *whole* call is cut into batches, never of which
    indices are skipped: a caller that recorded some batches of an interrupted call calls again with the
    same arguments and those indices in ``skip``, and gets the rest exactly as the first call would have.
    A batch holding a skipped index and a missing one is generated whole (only the missing are returned).
    ``on_batch(indices, generations)`` is called after each batch (skipped indices left out); it may
    raise to stop the call, and what it recorded stays recorded.

    A generator may set ``learns = False`` (its ``update`` changes nothing): the loop then skips the warm start.
    A generator with a tokenizer has ``count_tokens(prompt, completion) -> int``, the tokens ``update`` trains on
    for that pair: the loop's update budget counts with it (without it, an estimate from characters).
    """

    fingerprint: str

    def generate(self, prompts: Sequence[PromptLike], temperatures: Sequence[float], seeds: Sequence[int], *,
                 skip: Collection[int] = (), on_batch: OnBatch | None = None) -> list[Generation | None]: ...

    def update(self, examples: Sequence[tuple[PromptLike, str]], seed: int,
               epochs: float | None = None, learning_rate: float | None = None) -> UpdateResult: ...

    def save(self, directory: Path) -> None: ...

    def restore(self, directory: Path) -> None: ...


@dataclass
class ScriptedGenerator:
    """Replays completions from a list, in order, cycling; ``update`` only records what it was given.

    A test double for the loop (prompts, deltas, novelty, elites, store, resume);
    its "adapter state" is the number of updates taken, so save/restore are checkable.
    """

    completions: Sequence[str]
    fingerprint: str = "scripted"
    cursor: int = 0
    updates: list[int] = field(default_factory=list)
    prompts_seen: list[str] = field(default_factory=list)
    update_settings: list[tuple[float | None, float | None]] = field(default_factory=list)

    def generate(self, prompts: Sequence[PromptLike], temperatures: Sequence[float], seeds: Sequence[int], *,
                 skip: Collection[int] = (), on_batch: OnBatch | None = None) -> list[Generation | None]:
        out: list[Generation | None] = [None] * len(prompts)
        for i, p in enumerate(prompts):
            if i in skip:
                continue
            self.prompts_seen.append(p.user)
            text = self.completions[self.cursor % len(self.completions)]
            self.cursor += 1
            out[i] = Generation(text=text, num_tokens=len(text.split()), finish_reason="eos")
        todo = [i for i in range(len(prompts)) if i not in skip]
        if on_batch is not None and todo:
            on_batch(todo, [out[i] for i in todo])  # type: ignore[misc]
        return out

    def update(self, examples: Sequence[tuple[PromptLike, str]], seed: int,
               epochs: float | None = None, learning_rate: float | None = None) -> UpdateResult:
        self.updates.append(len(examples))
        self.update_settings.append((epochs, learning_rate))
        return UpdateResult(losses=(1.0 / len(self.updates),), steps=1, tokens=sum(len(c) for _, c in examples))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "scripted.json").write_text(json.dumps({"cursor": self.cursor, "updates": self.updates}))

    def restore(self, directory: Path) -> None:
        data = json.loads((directory / "scripted.json").read_text())
        self.cursor, self.updates = data["cursor"], list(data["updates"])


def save_checkpoint(generator: Generator, directory: Path) -> None:
    """The generator's state saved in ``directory``, then its ``COMPLETE`` marker (written last, removed first:
    a directory without it is a save that was cut short)."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "COMPLETE"
    if marker.exists():
        marker.unlink()
    generator.save(directory)
    marker.write_text(str(time.time()))


def restore_checkpoint(generator: Generator, directory: Path, run_dir: Path) -> None:
    """The generator's state from checkpoint ``directory`` of the run in ``run_dir``; a damaged one is a
    ``UserError`` naming it and the way out."""
    try:
        generator.restore(directory)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad file may fail anywhere in a decoder (json, orbax, ...)
        raise UserError(f"the checkpoint {directory} is damaged ({type(e).__name__}: {str(e)[:200]}); "
                        f"`cenas resume {run_dir} --redo-update` redoes the update that wrote it "
                        f"(remove its COMPLETE marker first)") from None


def fingerprint_file(path: Path, chunk: int = 1 << 20) -> str:
    """A cheap fingerprint of a weights file: size + SHA-256 of its first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
