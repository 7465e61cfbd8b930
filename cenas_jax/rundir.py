"""A run directory: resolved config, manifest, loop state, store, checkpoints.

Layout::

    RUN_DIR/config.yaml      the resolved configuration (what `cenas resume` reads)
    RUN_DIR/manifest.json    package versions, git revision, platform, model fingerprint
    RUN_DIR/state.json       the loop's position (cycle, phase, status), written atomically
    RUN_DIR/store.sqlite     the run store (every generation, evaluation, cycle)
    RUN_DIR/checkpoints/     LLM adapters after the warm start and after each CE update
    RUN_DIR/report/          written by `cenas report`
    RUN_DIR/.lock            held (flock) by the one `cenas run`/`resume` that owns the directory
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from cenas_jax.config import RunConfig, from_dict, to_dict
from cenas_jax.errors import UserError

# The phases of a cycle, in order (state.json's "phase"; timings also record "sample", a part of "generate").
PHASE_ORDER = ("generate", "train", "select", "update")
# The cycle number of the seed corpus in the store, and of the reference phase's recorded time.
REFERENCE_CYCLE = -1

STATE_VERSION = 1
PHASES = ("reference", "generate", "train", "select", "update", "done")


@dataclass(frozen=True)
class LoopState:
    """Where the loop stands: the next thing to do is ``phase`` of ``cycle``."""

    cycle: int = 0
    phase: str = "reference"
    status: str = "running"  # running | interrupted | finished | failed
    version: int = STATE_VERSION
    updated: float = 0.0


LOCK_NAME = ".lock"


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``: one owner per run directory (``cenas run`` or ``resume``).

    The kernel drops it when the owner dies, however it dies (kill -9 included), so a lock is never
    stale. Readers (``report``, ``export``, ``runs``, the live view) never take it. The file holds the
    owner's pid, host and command, for the message a second owner gets.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            _HELD.pop(str(self.path), None)
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


_HELD: dict[str, RunLock] = {}  # locks this process holds, by resolved lock path (re-entrant per process)


def lock_run_dir(run_dir: str | Path, command: str) -> RunLock:
    """Take the run directory's lock, or raise ``UserError`` naming the holder (pid, host, command)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = (run_dir / LOCK_NAME).resolve()
    held = _HELD.get(str(path))
    if held is not None:
        return held
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        raise UserError(f"{run_dir} is in use by {holder}: a run directory has one owner at a time; wait for it, "
                        f"or stop it (Ctrl-C or SIGTERM checkpoints it) and `cenas resume {run_dir}`. "
                        f"`cenas report {run_dir}` reads it meanwhile") from None
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    lock = RunLock(path, fd)
    _HELD[str(path)] = lock
    return lock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']} ({info.get('command', '?')}, since {info.get('since', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_holder(run_dir: str | Path) -> str | None:
    """Which other process holds the run directory's lock (None: nobody else), without taking it or creating
    anything."""
    path = (Path(run_dir) / LOCK_NAME).resolve()
    if str(path) in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(fd)
    finally:
        os.close(fd)  # also drops the shared lock when it was taken
    return None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a kill leaves either the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)  # e.g. a full disk: the old file stays as it was
        except OSError:
            pass
        raise


class RunDir:
    """Paths and small files of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def create(self, cfg: RunConfig, manifest: dict[str, Any]) -> None:
        if self.exists():
            raise UserError(f"{self.path} already holds a run; use `cenas resume {self.path}` or another --run-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        write_atomic(self.config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True))
        self.save_state(LoopState())

    def load_config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a run directory (no config.yaml)")
        try:
            data = yaml.safe_load(self.config_path.read_bytes().decode("utf-8")) or {}
        except (yaml.YAMLError, ValueError, OSError) as e:
            raise UserError(f"{self.config_path} is damaged: not valid YAML ({type(e).__name__})") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.config_path} is damaged: not a YAML mapping")
        return from_dict(RunConfig, data)

    def load_state(self) -> LoopState:
        try:
            data = json.loads(self.state_path.read_bytes().decode("utf-8"))
        except FileNotFoundError as e:
            raise UserError(f"{self.path} has no state.json: not a run directory, or created by something else") from e
        except (OSError, ValueError) as e:  # binary garbage, bad UTF-8, bad JSON, an unreadable file
            raise UserError(f"{self.state_path} is damaged ({type(e).__name__}); the run's records in store.sqlite are "
                            f"untouched and `cenas report`/`export` still read them. To continue, write the loop "
                            f"position back: {{\"cycle\": N, \"phase\": \"generate\", \"status\": \"interrupted\", "
                            f"\"version\": {STATE_VERSION}}} with N the first cycle the report does not show as "
                            f"complete, then `cenas resume {self.path}`") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.state_path} is damaged (not a JSON object)")
        if data.get("version") != STATE_VERSION:
            raise UserError(f"{self.state_path}: state version {data.get('version')!r}, this cenas_jax reads version {STATE_VERSION}")
        try:
            return LoopState(**data)
        except TypeError as e:
            raise UserError(f"{self.state_path}: unexpected fields ({e})") from e

    def save_state(self, state: LoopState) -> None:
        st = LoopState(**{**asdict(state), "updated": time.time()})
        write_atomic(self.state_path, json.dumps(asdict(st), indent=2))

    def manifest(self) -> dict[str, Any]:
        """The run's manifest; {} when there is none. A damaged one is a ``UserError``: `cenas resume --set`
        appends to it, and must not replace what it could not read."""
        try:
            data = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise UserError(f"{self.manifest_path} is damaged ({type(e).__name__}): it records what produced the "
                            f"run (versions, config changes); the run itself is intact. Restore it, or move it "
                            f"aside to continue without that record") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.manifest_path} is damaged (not a JSON object); move it aside to continue")
        return data


_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "datasketch", "transformers", "numpy", "scipy", "torch")


def build_manifest(cfg: RunConfig, model_fingerprint: str | None = None) -> dict[str, Any]:
    """What produced a run: versions, git revision, platform, config, model fingerprint."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        versions["cenas_jax"] = metadata.version("cenas_jax")
    except metadata.PackageNotFoundError:
        versions["cenas_jax"] = None
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions,
        "git_revision": _git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": _jax_backend(),
        "model_fingerprint": model_fingerprint,
        "config": to_dict(cfg),
    }


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        rev = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def _jax_backend() -> str | None:
    try:
        import jax

        return f"{jax.default_backend()} x{jax.device_count()}"
    except Exception:  # jax not importable here: the manifest still gets written
        return None
