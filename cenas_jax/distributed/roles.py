"""The parts each process plays in a ``--distributed`` run (DESIGN.md §7 "Many hosts").

Every process loads the same LLM and starts its own sandbox pool; all of them go through the same phases in
lockstep. Process 0 runs the ``SearchLoop``: it alone reads and writes the run directory and the store and
makes every decision that depends on them (slots, prompts, verdicts, elites). What the others must do it sends
as numbered operations, which they carry out in ``serve``:

- ``generate``: the call's batches (``LLMGenerator.batches``: the same batches a single process makes) are
  dealt out in turn (batch j to process j mod P); each process samples its own, and process 0 records every
  batch as it arrives. Generation i depends only on its prompt, temperature, key and batch, so the store is
  the one a single process writes.
- ``evaluate``: candidate i goes to process i mod P and is checked or trained by that host's sandbox workers;
  the records come back as JSON and are parsed as untrusted (``records.record_from_worker``).
- ``update``: the CE update is one SPMD program over the global mesh (FSDP: ``llm/sharding.FSDP_RULES``,
  gloo collectives on CPU). Afterwards every process holds the full adapters again.
- ``save`` / ``restore``: orbax's multi-host checkpointing, every process taking part
  (``collective_checkpoint``); the run directory and the cache must be on a filesystem all hosts see.

Candidate code never runs in a process that joined: the sandbox workers are processes of their own with a
scrubbed environment (``Evaluator._worker_env``). The optimiser state of a sharded update is not kept (the CE
update starts from a fresh optimiser every cycle anyway).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cenas_jax.distributed.group import Group, PeerLost
from cenas_jax.errors import UserError
from cenas_jax.search.generator import Generation, OnBatch, UpdateResult

FINISH_REASONS = ("eos", "stop", "length")


class Primary:
    """Process 0's side of the protocol: numbered operations out, results in."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.seq = 0

    def send(self, op: str, payload: dict[str, Any] | None = None) -> int:
        self.seq += 1
        self.group.put(f"op/{self.seq}", {"op": op, **(payload or {})})
        return self.seq

    def hello(self, config: dict[str, Any]) -> None:
        """Give the others the run's config, then wait until each has loaded its LLM and started its pool."""
        self.group.put("op/0", {"op": "hello", "config": config})

    def wait_ready(self, fingerprint: str) -> None:
        for p in self.group.peers:
            msg = self.group.wait(f"ready/{p}")
            if "error" in msg:
                raise RuntimeError(f"process {p} could not start: {msg['error']}")
            if msg.get("fingerprint") != fingerprint:
                raise RuntimeError(f"process {p} loaded another model ({msg.get('fingerprint')}) than process 0 "
                                   f"({fingerprint}): every host must have the same weights")

    def shutdown(self, reason: str = "", code: int = 0) -> None:
        """Tell the others the run ended and wait until each has closed its pool (the coordination service
        lives in this process: it must outlive their last message)."""
        try:
            self.send("shutdown", {"reason": reason, "code": code})
            for p in self.group.peers:
                self.group.wait(f"bye/{p}", watch=[p])
        except PeerLost:
            pass
        self.group.close()


def abort_others(group: Group, reason: str, code: int = 2) -> None:
    """Process 0 ends before (or instead of) its loop: the others, waiting for the config, end too."""
    try:
        if group.try_get("op/0") is None:
            group.put("op/0", {"op": "abort", "reason": reason, "code": code})
            for p in group.peers:  # the store lives in this process: it must outlive their reading it
                group.wait(f"bye/{p}", watch=[p])
        else:
            Primary(group).shutdown(reason, code)  # (after hello; the others' next op is 1)
    except PeerLost:
        pass
    group.close()


# ---------------------------------------------------------------------------------------------- generation


def batch_plan(inner: Any, prompts: Sequence[Any]) -> list[list[int]]:
    """How ``inner.generate`` cuts a call into batches (``LLMGenerator.batches``); one prompt per batch for a
    generator without batches (the mutation control)."""
    if hasattr(inner, "batches"):
        return [list(b) for b in inner.batches(prompts)]
    return [[i] for i in range(len(prompts))]


def deal(plan: Sequence[Sequence[int]], skip: Collection[int], n: int) -> list[list[list[int]]]:
    """The batches with something to generate, dealt out in turn: result[p] = process p's batches."""
    todo = [list(b) for b in plan if any(i not in skip for i in b)]
    return [todo[p::n] for p in range(n)]


def _prompt_json(p: Any) -> dict[str, Any]:
    return dataclasses.asdict(p) if dataclasses.is_dataclass(p) else {"system": "", "user": str(p)}


def _prompt_from(d: dict[str, Any]) -> Any:
    from cenas_jax.search.prompts import Prompt

    return Prompt(**{k: d.get(k) for k in ("system", "user", "mode", "dataset", "edit_format")})


def _generation_from(item: Any, where: str) -> tuple[int, Generation]:
    ok = (isinstance(item, list) and len(item) == 4 and isinstance(item[0], int) and isinstance(item[1], str)
          and isinstance(item[2], int) and item[2] >= 0 and item[3] in FINISH_REASONS)
    if not ok:
        raise RuntimeError(f"{where}: a malformed generation came back: {str(item)[:120]}")
    return item[0], Generation(text=item[1], num_tokens=item[2], finish_reason=item[3])


class DistributedGenerator:
    """Process 0's generator: the ``Generator`` protocol over all processes (see the module docstring)."""

    def __init__(self, inner: Any, primary: Primary, on_lost_in_collective: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self.primary = primary
        self.group = primary.group
        self.fingerprint = inner.fingerprint
        self.learns = getattr(inner, "learns", True)
        self.on_lost_in_collective = on_lost_in_collective

    def __getattr__(self, name: str) -> Any:  # count_tokens, speculation, ...: the local generator's
        return getattr(self.inner, name)

    def generate(self, prompts: Sequence[Any], temperatures: Sequence[float], seeds: Sequence[int], *,
                 skip: Collection[int] = (), on_batch: OnBatch | None = None) -> list[Generation | None]:
        n = self.group.num_processes
        dealt = deal(batch_plan(self.inner, prompts), skip, n)
        seq = self.primary.send("generate", {
            "prompts": [_prompt_json(p) for p in prompts], "temperatures": [float(t) for t in temperatures],
            "seeds": [int(s) for s in seeds], "skip": sorted(int(i) for i in skip), "dealt": dealt})
        out: list[Generation | None] = [None] * len(prompts)
        pending = {f"g/{seq}/{p}/{j}": (p, set(b) - set(skip)) for p in range(1, n) for j, b in enumerate(dealt[p])}

        def deliver(key: str, value: Any) -> None:
            p, wanted = pending.pop(key)
            items = [_generation_from(x, f"process {p}") for x in (value if isinstance(value, list) else [None])]
            if {i for i, _ in items} != wanted:
                raise RuntimeError(f"process {p} returned generations {sorted(i for i, _ in items)} for a batch of "
                                   f"{sorted(wanted)}")
            for i, g in items:
                out[i] = g
            if on_batch is not None:
                on_batch([i for i, _ in items], [g for _, g in items])

        def drain() -> None:
            for key in list(pending):
                value = self.group.try_get(key)
                if value is not None:
                    deliver(key, value)

        def own(ids: list[int], gens: list[Generation]) -> None:
            for i, g in zip(ids, gens):
                out[i] = g
            if on_batch is not None:
                on_batch(ids, gens)
            drain()

        mine = {i for b in dealt[0] for i in b}
        self.inner.generate(prompts, temperatures, seeds, skip={i for i in range(len(prompts)) if i not in mine} | set(skip),
                            on_batch=own)
        while pending:
            key = next(iter(pending))
            deliver(key, self.group.wait(key))
        self.group.delete(f"g/{seq}/{p}" for p in range(1, n))
        return out

    def update(self, examples: Sequence[tuple[Any, str]], seed: int, epochs: float | None = None,
               learning_rate: float | None = None) -> UpdateResult:
        if not collective_update(self.inner):
            return self.inner.update(examples, seed, epochs, learning_rate)
        self.primary.send("update", {"examples": [[_prompt_json(p), c] for p, c in examples], "seed": int(seed),
                                     "epochs": epochs, "learning_rate": learning_rate})
        with watchdog(self.group, self.on_lost_in_collective):
            return sharded_update(self.inner, examples, seed, epochs, learning_rate)

    def save(self, directory: Path) -> None:
        if not collective_update(self.inner):
            return self.inner.save(directory)
        self.primary.send("save", {"directory": str(directory)})
        with watchdog(self.group, self.on_lost_in_collective):
            collective_checkpoint(self.inner, "save", Path(directory))

    def restore(self, directory: Path) -> None:
        if not collective_update(self.inner):
            return self.inner.restore(directory)
        seq = self.primary.send("restore", {"directory": str(directory)})
        # Every process reads the checkpoint: first make sure each one sees it.
        unseen = [p for p in self.group.peers if not self.group.wait(f"sees/{seq}/{p}")]
        if not Path(directory).is_dir():
            unseen.insert(0, 0)
        self.group.put(f"go/{seq}", not unseen)
        if unseen:
            raise UserError(f"{directory}: process(es) {unseen} cannot see it. In a --distributed run every host "
                            f"reads the adapters: the run directory and the cache (CENAS_CACHE) must be on a "
                            f"filesystem all hosts share")
        with watchdog(self.group, self.on_lost_in_collective):
            collective_checkpoint(self.inner, "restore", Path(directory))


# ---------------------------------------------------------------------------------------------- evaluation


class DistributedEvaluator:
    """Process 0's evaluator: candidate i is evaluated by process i mod P's own sandbox pool."""

    def __init__(self, inner: Any, primary: Primary) -> None:
        self.inner = inner
        self.primary = primary
        self.group = primary.group

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def evaluate(self, candidates: Iterable[Any], train: bool = True, progress: bool = False) -> list[Any]:
        return list(self.evaluate_iter(candidates, train=train, progress=progress))

    def evaluate_iter(self, candidates: Iterable[Any], train: bool = True, progress: bool = False) -> Iterator[Any]:
        from cenas_jax.candidates.records import record_from_worker

        cands = list(candidates)
        n = self.group.num_processes
        seq = self.primary.send("evaluate", {"train": bool(train), "items": [
            [i, c.id, c.source, c.dataset] for i, c in enumerate(cands) if i % n != 0]})
        pending = {f"e/{seq}/{i}": c for i, c in enumerate(cands) if i % n != 0}
        finished = False
        t0 = time.monotonic()

        def parse(key: str, value: Any) -> Any:
            c = pending.pop(key)
            msg = value if isinstance(value, dict) else {}
            if msg.get("candidate_id") != c.id:
                msg = {"status": "error", "error_kind": "crash",
                       "error_message": f"protocol violation: another process returned a record for "
                                        f"{str(msg.get('candidate_id'))[:80]!r} in place of {c.id!r}"}
            return record_from_worker(c.id, msg, time.monotonic() - t0, c.dataset or msg.get("dataset") or "")

        own = self.inner.evaluate_iter([c for i, c in enumerate(cands) if i % n == 0], train=train)
        try:
            for rec in own:
                yield rec
                for key in list(pending):
                    value = self.group.try_get(key)
                    if value is not None:
                        yield parse(key, value)
            while pending:
                key = next(iter(pending))
                yield parse(key, self.group.wait(key))
            finished = True
        finally:
            if hasattr(own, "close"):
                own.close()
            if not finished:  # a stop: the others drop what they have not finished (resume redoes it)
                self.group.put(f"cancel/{seq}", True)
            self.group.delete([f"e/{seq}"])


# ---------------------------------------------------------------------------------------------- proxy-snr


def distributed_score_fn(primary: Primary, local_score: Callable) -> Callable:
    """``cenas proxy-snr --distributed``: a ``proxy_snr.experiment.ScoreFn`` over all processes. Architecture i
    is scored by process i mod P with its own score function (its own sandbox pool); an architecture's
    accuracies depend only on its source, the recipe and the key seed, not on which process trains it."""
    group = primary.group

    def score(archs: Sequence[Any], train_cfg: Any, seed: int) -> list[Any]:
        from cenas_jax.config import to_dict

        n = group.num_processes
        seq = primary.send("score", {"archs": [[i, a.id, a.source, a.dataset] for i, a in enumerate(archs) if i % n],
                                     "train": to_dict(train_cfg), "seed": int(seed)})
        out: list[Any] = [None] * len(archs)
        mine = [i for i in range(len(archs)) if i % n == 0]
        for i, sc in zip(mine, local_score([archs[i] for i in mine], train_cfg, seed)):
            out[i] = sc
        for i in range(len(archs)):
            if out[i] is None:
                out[i] = _arch_scores_from(group.wait(f"s/{seq}/{i}"), f"process {i % n}")
        group.delete([f"s/{seq}"])
        return out

    return score


def _arch_scores_from(v: Any, where: str) -> Any:
    from cenas_jax.proxy_snr.experiment import ArchScores

    if isinstance(v, dict) and isinstance(v.get("error"), str):
        return ArchScores(error=v["error"][:2000])
    seeds = v.get("seed_accuracies") if isinstance(v, dict) else None
    if not isinstance(seeds, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                              and 0.0 <= x <= 1.0 for x in seeds):
        return ArchScores(error=f"{where} returned malformed scores: {str(v)[:120]}")
    return ArchScores(seed_accuracies=tuple(float(x) for x in seeds))


class ScoreHost:
    """What a process other than 0 holds in ``cenas proxy-snr --distributed``: its own score function."""

    fingerprint = "proxy-snr"

    def __init__(self, local_score: Callable) -> None:
        self.local_score = local_score

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- the CE update


def collective_update(gen: Any) -> bool:
    """Whether ``gen``'s update is the sharded SPMD program (an LLM); the mutation control learns nothing."""
    return getattr(gen, "learns", True) and hasattr(gen, "model")


def _variables(model: Any):
    from flax import nnx

    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            yield path, node


def sharded_update(gen: Any, examples: Sequence[tuple[Any, str]], seed: int, epochs: float | None,
                   learning_rate: float | None) -> UpdateResult:
    """``gen.update`` as one program over every device of every process (FSDP), then the adapters gathered
    back into this process (every process samples with them) and the base weights put back as they were."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils

    from cenas_jax.llm import sharding

    model = gen.model
    local = {path: v.get_value() for path, v in _variables(model)}
    mesh = sharding.make_mesh(devices=jax.devices())
    placed = sharding.param_shardings(model, mesh, sharding.FSDP_RULES)
    for path, v in _variables(model):  # every process holds the whole value: each takes its shards of it
        host = np.asarray(local[path])
        v.set_value(jax.make_array_from_callback(host.shape, placed[path], lambda index, host=host: host[index]))
    ok = False
    try:
        result = gen.update(examples, seed, epochs, learning_rate)
        ok = True
    finally:
        for path, v in _variables(model):
            if ok and isinstance(v, nnx.LoRAParam):
                v.set_value(jnp.asarray(multihost_utils.process_allgather(v.get_value(), tiled=True)))
            else:
                v.set_value(local[path])
        gen._optimizer = None  # sharded over the processes; the next update starts from a fresh one anyway
    return result


def collective_checkpoint(gen: Any, kind: str, directory: Path) -> None:
    """Save or restore the adapters with every process taking part, as orbax does it in a multi-process job:
    the adapters become arrays replicated over every device of every process (process 0 writes them; every
    process reads them), then local arrays again."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from cenas_jax.llm import sharding

    replicated = NamedSharding(sharding.make_mesh(devices=jax.devices()), PartitionSpec())
    lora = [v for _, v in _variables(gen.model) if isinstance(v, nnx.LoRAParam)]
    local = [v.get_value() for v in lora]
    for v, x in zip(lora, local):
        v.set_value(jax.make_array_from_process_local_data(replicated, np.asarray(x)))
    ok = False
    try:
        gen.save(directory) if kind == "save" else gen.restore(directory)
        ok = True
    finally:
        for v, x in zip(lora, local):
            v.set_value(jnp.asarray(v.get_value().addressable_data(0)) if ok and kind == "restore" else x)


class watchdog:
    """While a collective runs, a lost peer would leave this process waiting in it for good: a thread watches
    the heartbeats and calls ``on_lost(message)`` (which ends the process) when a peer is lost."""

    def __init__(self, group: Group, on_lost: Callable[[str], None] | None) -> None:
        self.group = group
        self.on_lost = on_lost or _exit_lost
        self.done = threading.Event()

    def __enter__(self) -> watchdog:
        def watch() -> None:
            while not self.done.wait(1.0):
                try:
                    self.group.check_alive(self.group.peers)
                except PeerLost as e:
                    self.on_lost(str(e))
                    return
                except Exception:  # noqa: BLE001 - the store itself is gone: process 0 ended
                    self.on_lost("the coordination service (process 0) stopped answering")
                    return

        threading.Thread(target=watch, name="cenas-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()


def _exit_lost(message: str) -> None:
    from cenas_jax.search.loop import EXIT_INTERRUPTED

    print(f"cenas: {message} during a collective step; stopping (the run resumes from its last checkpoint)",
          file=sys.stderr, flush=True)
    os._exit(EXIT_INTERRUPTED)


# ---------------------------------------------------------------------------------------------- processes 1..P-1


def serve(group: Group, build: Callable[[dict[str, Any]], tuple[Any, Any]], echo: Callable[[str], None] = print) -> int:
    """A process other than 0: build the generator and the sandbox pool from process 0's config, then carry out
    its operations until ``shutdown``. Returns the exit code."""
    from cenas_jax.search.loop import EXIT_INTERRUPTED

    pid = group.process_id
    try:
        hello = group.wait("op/0", watch=[0])
        if hello.get("op") == "abort":
            group.put(f"bye/{pid}", True)
            echo(f"process {pid}: process 0 ended before the run started: {hello.get('reason')}")
            return int(hello.get("code", 2))
        try:
            gen, evaluator = build(hello["config"])
        except Exception as e:
            group.put(f"ready/{pid}", {"error": f"{type(e).__name__}: {e}"})
            raise
        group.put(f"ready/{pid}", {"fingerprint": gen.fingerprint})
        echo(f"process {pid}: ready ({group.num_processes} processes)")
        try:
            seq = 1
            while True:
                op = group.wait(f"op/{seq}", watch=[0])
                kind = op.get("op")
                if kind == "shutdown":
                    evaluator.close()
                    group.put(f"bye/{pid}", True)
                    echo(f"process {pid}: done" + (f" ({op['reason']})" if op.get("reason") else ""))
                    return int(op.get("code", 0))
                _carry_out(group, seq, op, gen, evaluator)
                seq += 1
        finally:
            evaluator.close()
    except PeerLost as e:
        echo(f"process {pid}: {e}; stopping (process 0 keeps the run at its last checkpoint; "
             f"resume with `cenas resume RUN_DIR --distributed`)")
        return EXIT_INTERRUPTED
    finally:
        group.close()


def _carry_out(group: Group, seq: int, op: dict[str, Any], gen: Any, evaluator: Any) -> None:
    pid, n = group.process_id, group.num_processes
    kind = op.get("op")
    if kind == "generate":
        prompts = [_prompt_from(d) for d in op["prompts"]]
        mine = op["dealt"][pid]
        where = {i: j for j, b in enumerate(mine) for i in b}
        keep = {i for b in mine for i in b}
        skip = {i for i in range(len(prompts)) if i not in keep} | set(op["skip"])
        wanted = {j: {i for i in b if i not in skip} for j, b in enumerate(mine)}
        done: dict[int, list[list[Any]]] = {j: [] for j in wanted}

        def post(ids: list[int], gens: list[Generation]) -> None:
            """Each batch is posted whole, when its last generation is in (however ``on_batch`` is called)."""
            for i, g in zip(ids, gens):
                j = where[i]
                done[j].append([i, g.text, g.num_tokens, g.finish_reason])
                if len(done[j]) == len(wanted[j]):
                    group.put(f"g/{seq}/{pid}/{j}", done[j])

        gen.generate(prompts, op["temperatures"], op["seeds"], skip=skip, on_batch=post)
    elif kind == "evaluate":
        from cenas_jax.candidates.records import Candidate

        mine = [(i, Candidate(id=cid, source=src, dataset=ds)) for i, cid, src, ds in op["items"] if i % n == pid]
        index = {c.id: i for i, c in mine}
        it = evaluator.evaluate_iter([c for _, c in mine], train=op["train"])
        try:
            for rec in it:
                group.put(f"e/{seq}/{index[rec.candidate_id]}", rec.to_dict())
                if group.try_get(f"cancel/{seq}") is not None:
                    break
        finally:
            if hasattr(it, "close"):
                it.close()
    elif kind == "update":
        if collective_update(gen):
            examples = [(_prompt_from(p), c) for p, c in op["examples"]]
            with watchdog(group, None):
                sharded_update(gen, examples, op["seed"], op["epochs"], op["learning_rate"])
    elif kind == "save":
        with watchdog(group, None):
            collective_checkpoint(gen, "save", Path(op["directory"]))
    elif kind == "restore":
        group.put(f"sees/{seq}/{pid}", Path(op["directory"]).is_dir())
        if group.wait(f"go/{seq}", watch=[0]):
            with watchdog(group, None):
                collective_checkpoint(gen, "restore", Path(op["directory"]))
    elif kind == "score":
        from cenas_jax.config import TrainConfig, from_dict
        from cenas_jax.proxy_snr.experiment import Arch

        mine = [(i, Arch(id=aid, source=src, dataset=ds)) for i, aid, src, ds in op["archs"] if i % n == pid]
        scores = evaluator.local_score([a for _, a in mine], from_dict(TrainConfig, op["train"]), op["seed"])
        for (i, _), sc in zip(mine, scores):
            group.put(f"s/{seq}/{i}", {"error": sc.error, "seed_accuracies": list(sc.seed_accuracies)})
    else:
        raise RuntimeError(f"process {pid}: unknown operation {kind!r} from process 0")
