"""Hostile candidates (tests/hostile/*.py) through the real sandbox: each ends as a record of the right kind,
nothing outside the sandbox changes, and normal candidates keep evaluating.

Each hostile file runs with the static policy on and, where its header says so, with the policy
bypassed (the code reaches ``exec`` with restricted builtins) or as raw ``exec`` (no code-level
layer at all): the process boundary (namespaces, read-only root, private tmpfs, uid drop, rlimits,
the parent's wall clock) must hold on its own. See tests/hostile/README.md for the header format.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from programs import mlp

from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.records import Candidate
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

HOSTILE_DIR = Path(__file__).parent / "hostile"
FULL_ISOLATION = sys.platform.startswith("linux") and os.geteuid() == 0

pytestmark = pytest.mark.skipif(
    not FULL_ISOLATION, reason="the boundary tests need full isolation (Linux, run as root, as in DESIGN.md §3)"
)

NORMAL = mlp(32)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    source: str
    policy: tuple[str, ...]  # acceptable kinds with the policy on
    bypass: tuple[str, ...]  # acceptable kinds with the policy bypassed
    exec_kind: str | None  # kind for raw exec
    train: bool


def _header(source: str, key: str) -> str | None:
    m = re.search(rf"^# {key}: (.+)$", source, re.M)
    return m.group(1).strip() if m else None


class Host:
    """Everything outside the sandbox the hostile code aims at, and the checks that it is untouched."""

    def __init__(self, hidden_root: Path) -> None:
        base = "/var/tmp" if os.path.isdir("/var/tmp") else None
        self.marker_dir = Path(tempfile.mkdtemp(prefix="cenas-hostile-", dir=base))
        os.chmod(self.marker_dir, 0o777)  # even world-writable: the read-only mount must stop the write
        self.secret_dir = Path(tempfile.mkdtemp(prefix="cenas-secret-", dir=base))
        os.chmod(self.secret_dir, 0o755)
        self.secret = self.secret_dir / "secret.bin"
        self.secret.write_bytes(b"root only")
        os.chmod(self.secret, 0o600)
        self.hidden = hidden_root / "hidden-marker"
        self.shm_name = f"cenas-hostile-{os.getpid()}"
        self.signals = 0
        self._old = signal.signal(signal.SIGUSR1, self._on_signal)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _on_signal(self, *_):
        self.signals += 1

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def fill(self, source: str, name: str) -> str:
        return (
            source.replace("@@MARKER@@", str(self.marker_dir / name))
            .replace("@@HIDDEN@@", str(self.hidden))
            .replace("@@SECRET@@", str(self.secret))
            .replace("@@PID@@", str(os.getpid()))
            .replace("@@PORT@@", str(self.server.getsockname()[1]))
            .replace("@@SHM_NAME@@", self.shm_name)
        )

    def assert_untouched(self) -> None:
        assert sorted(os.listdir(self.marker_dir)) == [], "hostile code wrote outside the sandbox"
        assert not self.hidden.exists()
        assert self.secret.read_bytes() == b"root only"
        assert not os.path.exists(f"/dev/shm/{self.shm_name}")
        assert not os.path.exists("/etc/cenas-escaped") and not os.path.exists("/usr/cenas-escaped")
        assert self.signals == 0, "a signal from the sandbox reached the test process"
        assert self.connections == 0, "the sandbox reached a socket on the host's loopback"

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.server.close()
        signal.signal(signal.SIGUSR1, self._old)
        shutil.rmtree(self.marker_dir, ignore_errors=True)
        shutil.rmtree(self.secret_dir, ignore_errors=True)


def load_cases(host: Host) -> list[Case]:
    cases = []
    for path in sorted(HOSTILE_DIR.glob("*.py")):
        raw = path.read_text()
        bypass = _header(raw, "bypass")
        policy = _header(raw, "policy")
        cases.append(
            Case(
                name=path.stem,
                source=host.fill(raw, path.stem),
                policy=tuple(policy.split()) if policy else (),
                bypass=tuple(bypass.split()) if bypass else (),
                exec_kind=_header(raw, "exec"),
                train=_header(raw, "train") == "yes",
            )
        )
    return cases


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("hidden"))
    yield h
    h.close()


@pytest.fixture(scope="module")
def cases(host):
    return load_cases(host)


@pytest.fixture(scope="module")
def evaluator():
    cfg = SandboxConfig(
        workers=2, timeout_s=15, check_timeout_s=6, memory_mb=3072, max_tasks_per_worker=100, max_params=1_000_000
    )
    ev = Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1, batch_size=32), cfg, allow_layer_bypass=True)
    yield ev
    ev.close()


def _with_normals(items: list[tuple[str, str]]) -> list[Candidate]:
    """Each hostile candidate followed by a normal one: the pool must keep serving."""
    out = []
    for name, source in items:
        out.append(Candidate(name, source))
        out.append(Candidate(f"normal-after-{name}", NORMAL))
    return out


def _check(records, expected: dict[str, tuple[str, ...]]) -> None:
    wrong = []
    for rec in records:
        if rec.candidate_id.startswith("normal-after-"):
            if rec.status != "ok":
                wrong.append(f"{rec.candidate_id}: {rec.error_kind} {rec.error_message}")
            continue
        want = expected[rec.candidate_id]
        got = "ok" if rec.status == "ok" else rec.error_kind
        if got not in want:
            wrong.append(f"{rec.candidate_id}: expected {want}, got {got} ({rec.error_message})")
    assert not wrong, "\n".join(wrong)


def test_there_are_enough_hostile_candidates(cases):
    assert len([c for c in cases if c.policy]) >= 20
    assert len([c for c in cases if c.bypass or c.exec_kind]) >= 15


def test_hostile_with_policy_on(evaluator, host, cases):
    cheap = [c for c in cases if c.policy and not c.train]
    records = evaluator.evaluate(_with_normals([(c.name, c.source) for c in cheap]), train=False)
    assert [r.candidate_id for r in records][::2] == [c.name for c in cheap]
    _check(records, {c.name: c.policy for c in cheap})
    host.assert_untouched()
    policy_refusals = [r for r in records if r.error_kind == "policy"]
    assert all(r.stage == "policy" and r.error_message for r in policy_refusals)


def test_hostile_training_stage(evaluator, host, cases):
    trained = [c for c in cases if c.policy and c.train]
    assert {k for c in trained for k in c.policy} >= {"timeout", "nan", "memory"}
    t0 = time.monotonic()
    items = [Candidate(c.name, c.source) for c in trained] + [Candidate("normal-after-all", NORMAL)]
    records = evaluator.evaluate(items, train=True)
    _check(records, {c.name: c.policy for c in trained})
    by_id = {r.candidate_id: r for r in records}
    assert by_id["loop_traced"].stage == "train"
    assert by_id["loop_traced"].wall_s >= evaluator.cfg.timeout_s - 0.5
    assert time.monotonic() - t0 < 4 * evaluator.cfg.timeout_s
    normal = [r for r in records if r.candidate_id.startswith("normal-after-")]
    assert all(r.accuracy is not None and 0.0 <= r.accuracy <= 1.0 for r in normal)
    host.assert_untouched()


def test_hostile_with_policy_bypassed(evaluator, host, cases):
    """No static policy: the restricted builtins and the process boundary are left, and hold."""
    bypassed = [c for c in cases if c.bypass]
    items = _with_normals([(c.name, c.source) for c in bypassed])
    records = evaluator.evaluate_bypassing(items, "policy", train=False)
    _check(records, {c.name: c.bypass for c in bypassed})
    host.assert_untouched()


def test_raw_exec_only_the_process_boundary(evaluator, host, cases):
    """Plain ``exec`` of hostile code in the worker: no policy, no restricted builtins."""
    raw = [c for c in cases if c.exec_kind]
    assert len(raw) >= 8
    items = _with_normals([(c.name, c.source) for c in raw])
    records = evaluator.evaluate_bypassing(items[::2], "exec", train=False)
    _check(records, {c.name: (c.exec_kind,) for c in raw})
    normals = evaluator.evaluate(items[1::2], train=False)
    assert all(r.status == "ok" for r in normals)
    time.sleep(3.5)  # raw_fork_daemon's child would write its marker after 3 s, were it alive and able
    host.assert_untouched()
