"""The sandbox pool: records and their order, stages, training through the worker, timeouts, recycling,
workers dying with their parent, the isolation probe, and the parent's distrust of worker output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from programs import mlp

from cenas_jax.candidates import handle, placement, records, workspace
from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.records import Candidate, EvalRecord
from cenas_jax.candidates.worker import FrameBuffer, encode_frame
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

LINUX_ROOT = sys.platform.startswith("linux") and os.geteuid() == 0

MLP = mlp(32)
MLP_PARAMS = 64 * 32 + 32 + 32 * 10 + 10  # digits: 8x8x1 inputs

LOOP = "import flax.linen as nn\nwhile True:\n    pass\n"


def _cfg(**kw) -> SandboxConfig:
    base = dict(workers=2, timeout_s=30, check_timeout_s=8, memory_mb=3072, max_params=100_000)
    base.update(kw)
    return SandboxConfig(**base)


@pytest.fixture(scope="module")
def evaluator():
    ev = Evaluator(
        DataConfig(name="digits"), TrainConfig(epochs=1, batch_size=32), _cfg(), seed=3, allow_layer_bypass=True
    )
    yield ev
    ev.close()


def test_cheap_stages_each_have_their_kind_and_order_is_kept(evaluator):
    cands = [
        Candidate("ok", MLP),
        Candidate("syntax", "class Net(:\n"),
        Candidate("policy", "import os\n" + MLP),
        Candidate("build", "import flax.linen as nn\nx = 1 / 0\n"),
        Candidate("shape", MLP.replace("nn.Dense(self.num_classes)", "nn.Dense(3)")),
        Candidate("budget", MLP.replace("nn.Dense(32)", "nn.Dense(4000)")),
    ]
    recs = evaluator.evaluate(cands, train=False)
    assert [r.candidate_id for r in recs] == [c.id for c in cands]
    got = {r.candidate_id: (r.status, r.error_kind, r.stage) for r in recs}
    assert got == {
        "ok": ("ok", None, "budget"),
        "syntax": ("error", "syntax", "syntax"),
        "policy": ("error", "policy", "policy"),
        "build": ("error", "build", "build"),
        "shape": ("error", "shape", "shape"),
        "budget": ("error", "budget", "budget"),
    }
    ok = recs[0]
    assert ok.params == MLP_PARAMS and ok.accuracy is None and len(ok.structure_hash) == 16
    assert recs[5].params == 64 * 4000 + 4000 + 4000 * 10 + 10 and "100,000" in recs[5].error_message
    assert "ZeroDivisionError" in recs[3].error_message
    assert "[forbidden" in recs[2].error_message or "allow" in recs[2].error_message
    # Same architecture, other names and formatting: the same structure hash.
    renamed = (
        "import flax.linen as nn\nfrom flax import linen\n\nclass Net(linen.Module):\n    num_classes: int = 10\n\n"
        "    @nn.compact\n    def __call__(self, inputs, train=False):\n"
        "        hidden = nn.relu(nn.Dense(features=32)(inputs.reshape((inputs.shape[0], -1))))\n"
        "        return nn.Dense(self.num_classes)(hidden)\n"
    )
    (again,) = evaluator.evaluate([Candidate("renamed", renamed)], train=False)
    assert again.structure_hash == ok.structure_hash


def test_training_in_the_worker_matches_training_in_process(evaluator):
    """The sandbox adds isolation, not a different result: same key, same data, same accuracy."""
    import zlib

    import jax

    from cenas_jax.candidates.contract import build_net
    from cenas_jax.data import load_dataset
    from cenas_jax.train import train_candidate

    (rec,) = evaluator.evaluate([Candidate("mlp", MLP)], train=True)
    assert rec.status == "ok", rec.error_message
    assert rec.stage == "train" and rec.dataset == "digits"
    assert rec.params == MLP_PARAMS
    assert rec.flops is not None and rec.flops > 2 * MLP_PARAMS * 0.9
    assert rec.compile_s > 0 and rec.train_s > 0 and rec.wall_s >= rec.train_s
    assert len(rec.seed_accuracies) == 1 and rec.accuracy == pytest.approx(rec.seed_accuracies[0])
    assert rec.accuracy > 0.5  # 1 epoch of SGD on digits: far above chance (0.1)

    built = build_net(MLP, 10)
    ds = load_dataset(DataConfig(name="digits"))
    key = jax.random.fold_in(jax.random.PRNGKey(3), zlib.crc32(MLP.encode()) & 0x7FFFFFFF)
    ref = train_candidate(built.module, built.takes_train, ds, TrainConfig(epochs=1, batch_size=32,
                                                                           compile_cache=False), key)  # fmt: skip
    n_val = len(ds.y_val)
    assert abs(rec.accuracy - ref.accuracy) <= 2 / n_val  # one thread vs many may flip a prediction
    assert rec.loss == pytest.approx(ref.loss, rel=1e-3)


def test_evaluate_iter_yields_every_record_as_it_completes(evaluator):
    evaluator.start()
    assert len(evaluator.worker_pids()) == evaluator.pool_size == 2
    cands = [Candidate(f"c{i}", MLP if i % 2 else "x = (") for i in range(5)]
    seen = [r.candidate_id for r in evaluator.evaluate_iter(cands, train=False)]
    assert sorted(seen) == sorted(c.id for c in cands)


def test_recycling_after_k_tasks_and_timeouts_that_kill_the_worker():
    cfg = _cfg(workers=1, check_timeout_s=3, max_tasks_per_worker=2)
    with Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1), cfg) as ev:
        first = ev.evaluate([Candidate("a", MLP)], train=False)
        (pgid,) = ev.worker_pids()
        assert ev.evaluate([Candidate("b", MLP)], train=False)[0].status == "ok"
        assert not ev.worker_pids() and ev._serial == 1  # retired after its second task
        t0 = time.monotonic()
        recs = ev.evaluate([Candidate("loop", LOOP), Candidate("after", MLP)], train=False)
        elapsed = time.monotonic() - t0
        assert first[0].status == "ok"
        assert (recs[0].status, recs[0].error_kind, recs[0].stage) == ("error", "timeout", "build")
        assert 3.0 <= recs[0].wall_s < 6.0 and "3 s" in recs[0].error_message
        assert recs[1].status == "ok"
        assert ev._serial == 3  # one for a and b, one killed by the timeout, one for "after"
        assert elapsed < 90
        assert not _processes_in_groups({pgid}), "a retired worker's process group is still alive"
        # A worker killed from outside while idle is replaced; the next candidate is not blamed.
        (idle,) = ev.worker_pids()
        os.killpg(idle, signal.SIGKILL)
        time.sleep(0.5)
        (rec,) = ev.evaluate([Candidate("after-idle-kill", MLP)], train=False)
        assert rec.status == "ok" and idle not in ev.worker_pids()
        # Without the test switch a worker refuses to bypass the policy.
        (refused,) = ev.evaluate_bypassing([Candidate("x", "import os\nos.system('true')")], "exec")
        assert refused.error_kind == "policy" and "disabled" in refused.error_message


def test_a_crash_is_a_record_and_the_worker_is_replaced(evaluator):
    kill = "import typing\nimport flax.linen as nn\nos = typing.sys.modules['os']\nos.kill(os.getpid(), 9)\n"
    (rec, after) = evaluator.evaluate_bypassing([Candidate("kill", kill), Candidate("after", MLP)], "policy")
    assert (rec.status, rec.error_kind, rec.stage) == ("error", "crash", "build")
    assert "SIGKILL" in rec.error_message
    assert after.status == "ok"


def _processes_in_groups(pgids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) in pgids:
            found.append(int(entry))
    return found


def _pid_namespaces_of(pids: list[int]) -> set[str]:
    out = set()
    for pid in pids:
        try:
            out.add(os.readlink(f"/proc/{pid}/ns/pid"))
        except OSError:
            pass
    return out


def _processes_in_namespaces(namespaces: set[str]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") in namespaces:
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not LINUX_ROOT, reason="pid namespaces (full isolation) need Linux as root")
def test_a_killed_parent_leaves_no_orphan(tmp_path):
    """SIGKILL the search process mid-evaluation: every worker process (and their children) goes too."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, threading
            sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
            from cenas_jax.candidates.evaluator import Evaluator
            from cenas_jax.candidates.records import Candidate
            from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig
            ev = Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1),
                           SandboxConfig(workers=2, timeout_s=600, check_timeout_s=600), allow_layer_bypass=True)
            ev.evaluate([Candidate("warm", {MLP!r})], train=False)
            ev.evaluate([Candidate("warm2", {MLP!r}), Candidate("warm3", {MLP!r})], train=False)
            print(" ".join(map(str, ev.worker_pids())), flush=True)
            # a daemonised grandchild in one worker, an endless loop in the other
            fork = "import os\\nif os.fork() == 0:\\n    os.setsid()\\n    import time\\n    time.sleep(600)\\n"
            ev.evaluate_bypassing([Candidate("fork", fork), Candidate("loop", "while True: pass")], "exec")
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    pgids = {int(p) for p in line.split()}
    assert len(pgids) == 2, line
    time.sleep(3)  # let the fork and the loop start
    members = _processes_in_groups(pgids)
    namespaces = _pid_namespaces_of(members) - {os.readlink("/proc/self/ns/pid")}
    assert len(members) >= 6 and len(namespaces) == 2  # launcher + init + worker per worker, 2 pid namespaces
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_processes_in_groups(pgids) or _processes_in_namespaces(namespaces)):
        time.sleep(0.2)
    assert not _processes_in_groups(pgids), "worker processes outlived their parent"
    assert not _processes_in_namespaces(namespaces), "a process in a worker's pid namespace outlived it"


@pytest.mark.skipif(not LINUX_ROOT, reason="full isolation needs Linux as root")
def test_isolation_probe_reports_every_layer_that_held_here(evaluator):
    report = evaluator.probe_isolation()
    layers = report["layers"]
    assert report["mode"] == "full"
    expected_active = [
        "net_namespace", "mount_namespace", "pid_namespace", "readonly_root", "private_tmp", "uid_drop",
        "no_new_privs", "no_network", "no_remount", "rlimit_as", "rlimit_cpu", "rlimit_nproc", "rlimit_fsize",
        "threads_unprivileged", "no_signal_parent", "host_files_unchanged",
    ]  # fmt: skip
    inactive = [name for name in expected_active if not layers[name]["active"]]
    assert not inactive, {name: layers[name] for name in inactive}
    assert layers["user_namespace"]["active"] is False  # root needs none: the uid drop does its work
    from cenas_jax.candidates.isolation import seccomp_supported

    assert layers["seccomp"]["active"] is seccomp_supported()
    if seccomp_supported():  # the filter is on every thread (TSYNC), XLA's pool included
        assert "thread seccomp modes ['2']" in layers["threads_unprivileged"]["detail"]
    assert str(3072 << 20) in layers["rlimit_as"]["detail"]


def test_rlimits_mode_still_evaluates_and_says_what_is_missing_and_close_stops_workers():
    ev = Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1), _cfg(workers=1, isolation="rlimits"))
    (rec,) = ev.evaluate([Candidate("a", MLP)], train=False)
    assert rec.status == "ok" and rec.params == MLP_PARAMS
    pgids = set(ev.worker_pids())
    report = ev.probe_isolation()
    root = ev._root
    ev.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _processes_in_groups(pgids):
        time.sleep(0.1)
    assert not _processes_in_groups(pgids)
    assert not os.path.exists(root)
    with pytest.raises(RuntimeError, match="closed"):
        ev.evaluate([Candidate("b", MLP)])
    assert report["mode"] == "rlimits"
    layers = report["layers"]
    assert not layers["net_namespace"]["active"] and not layers["private_tmp"]["active"]
    assert layers["rlimit_as"]["active"] and layers["rlimit_cpu"]["active"]
    if os.geteuid() == 0:  # as root without namespaces the probe's writes go through, and are cleaned up
        assert not layers["readonly_root"]["active"]
    for path in ("/cenas-probe", "/etc/cenas-probe", "/usr/cenas-probe", "/var/tmp/cenas-probe"):
        assert not os.path.exists(path)


def test_frame_buffer_reassembles_and_caps_messages():
    fb = FrameBuffer(cap=100)
    data = encode_frame({"type": "stage", "stage": "build"}) + encode_frame({"type": "result", "status": "ok"})
    assert fb.feed(data[:3]) == []
    msgs = fb.feed(data[3:10]) + fb.feed(data[10:])
    assert msgs == [{"type": "stage", "stage": "build"}, {"type": "result", "status": "ok"}]
    with pytest.raises(ValueError, match="limit"):
        FrameBuffer(cap=100).feed(encode_frame({"x": "y" * 200}))
    with pytest.raises(ValueError, match="not an object"):
        FrameBuffer().feed(encode_frame([1, 2]))


def test_worker_values_are_sanitised():
    """A worker is untrusted: impossible values never reach a record as they came."""
    msg = {"status": "weird", "error_kind": "rm -rf", "accuracy": 7.5, "params": -3, "seed_accuracies": [2, "x", -1],
           "stage": "evil", "structure_hash": "h" * 500, "error_message": "m" * 10_000, "flops": True}  # fmt: skip
    rec = records.record_from_worker("c", msg, 1.0, "digits")
    assert (rec.status, rec.error_kind, rec.stage) == ("error", "crash", None)
    assert rec.accuracy == 1.0 and rec.params is None and rec.seed_accuracies == (1.0, 0.0)
    assert rec.structure_hash is None and rec.flops is None and len(rec.error_message) < 2100
    ok = records.record_from_worker("d", {"status": "ok", "error_kind": "nan", "loss": 0.5}, 1.0, "digits")
    assert ok.status == "ok" and ok.error_kind is None and ok.loss == 0.5
    for bad in ({"loss": float("nan")}, {"accuracy": 1.5}, {"accuracy": float("inf")}, {"seed_accuracies": [0.5, 2]}):
        rec = records.record_from_worker("e", dict(bad, status="ok"), 1.0, "digits")
        assert (rec.status, rec.error_kind, rec.accuracy) == ("error", "crash", None), bad
        assert rec.error_message.startswith("protocol violation")


def test_exit_codes_are_classified():
    assert handle.describe_exit(128 + signal.SIGSEGV) == ("crash", "the worker died from SIGSEGV")
    assert handle.describe_exit(128 + signal.SIGXCPU)[0] == "timeout"
    assert handle.describe_exit(7) == ("crash", "the worker exited with code 7")


def test_record_to_dict_round_trips():
    rec = EvalRecord("c", "ok", seed_accuracies=(0.5, 0.7), accuracy=0.6, params=10)
    d = rec.to_dict()
    assert d["seed_accuracies"] == [0.5, 0.7] and d["candidate_id"] == "c" and d["error_kind"] is None
    assert EvalRecord(**{**d, "seed_accuracies": tuple(d["seed_accuracies"])}) == rec


def test_oversized_source_is_refused_without_a_worker(evaluator):
    big = MLP + "#" * (evaluator.cfg.max_source_bytes + 1)
    (rec, ok) = evaluator.evaluate([Candidate("big", big), Candidate("ok", MLP)], train=False)
    assert (rec.status, rec.error_kind, rec.stage) == ("error", "policy", "policy")
    assert "[size]" in rec.error_message and ok.status == "ok"


def test_cli_eval_prints_json_lines_and_a_table(tmp_path, capsys):
    import json

    from cenas_jax.cli import main

    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(MLP)
    bad.write_text("import subprocess\n" + MLP)
    args = ["eval", str(good), str(bad), "--dataset", "digits", "--no-train", "--no-progress",
            "--set", "sandbox.workers=1", "--set", "sandbox.check_timeout_s=20"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(good), str(bad)]
    for key in ("status", "error_kind", "accuracy", "params", "flops", "compile_s", "train_s", "error_message"):
        assert key in rows[0]
    assert (rows[0]["status"], rows[0]["params"]) == ("ok", MLP_PARAMS)
    assert (rows[1]["status"], rows[1]["error_kind"]) == ("error", "policy")

    from cenas_jax.candidates.records import EvalRecord
    from cenas_jax.cli.eval import format_table

    table = format_table([(str(good), EvalRecord("a", "ok", params=MLP_PARAMS, accuracy=0.91234)),
                          (str(bad), EvalRecord("b", "error", "policy", "refused: import"))])  # fmt: skip
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["path", "status", "error_kind", "accuracy"]
    assert "0.9123" in lines[2] and "2,410" in lines[2] and "refused: import" in lines[3]

    assert main(["eval", str(tmp_path / "missing.py"), "--no-train"]) == 2
    assert "missing.py: no such file" in capsys.readouterr().err


def test_cli_sandbox_check_flags_missing_layers(evaluator, monkeypatch, capsys):
    from cenas_jax.cli import main

    report = evaluator.probe_isolation()
    monkeypatch.setattr(Evaluator, "probe_isolation", lambda self: report)
    assert main(["sandbox", "check"]) == (0 if LINUX_ROOT else 1)
    out = capsys.readouterr().out
    assert "isolation mode:" in out and "uid_drop" in out and "rlimit_nproc" in out
    weaker = {**report, "layers": {**report["layers"], "uid_drop": {"active": False, "detail": "uid 0"}}}
    monkeypatch.setattr(Evaluator, "probe_isolation", lambda self: weaker)
    assert main(["sandbox", "check"]) == 1
    out = capsys.readouterr().out
    assert "WARNING" in out and "uid_drop" in out.split("WARNING")[1]


def test_patched_modules_are_restored_for_the_next_candidate():
    """A candidate that reassigns math.pi / jnp.mean / nn.relu does not change the next one's result."""
    patch = (Path(__file__).parent / "hostile" / "patch_modules.py").read_text()
    probe = MLP.replace("import flax.linen as nn", "import math\nimport flax.linen as nn").replace(
        "nn.Dense(32)", "nn.Dense(int(math.pi * 10))"
    )
    cfg = _cfg(workers=1)
    with Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1), cfg, allow_layer_bypass=True) as ev:
        recs = ev.evaluate_bypassing([Candidate("patch", patch)], "policy")
        recs += ev.evaluate([Candidate("probe", probe)], train=False)
        assert ev._serial == 1  # both ran in the same worker
    assert recs[0].status == "ok"
    assert recs[1].params == 64 * 31 + 31 + 31 * 10 + 10  # int(pi * 10) = 31, not 30


@pytest.mark.skipif(not LINUX_ROOT, reason="exercised here as root; a non-root user gets this mode by default")
def test_user_namespace_mode_isolates_without_root_privileges(monkeypatch):
    """The mode non-root users get: a user namespace, the same mounts, every capability dropped."""
    from cenas_jax.candidates import isolation

    monkeypatch.setattr(isolation, "detect_mode", lambda requested: "userns")
    with Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1), _cfg(workers=1)) as ev:
        (rec,) = ev.evaluate([Candidate("a", MLP)], train=False)
        report = ev.probe_isolation()
    assert rec.status == "ok" and rec.params == MLP_PARAMS
    assert report["mode"] == "userns"
    layers = report["layers"]
    for name in ("user_namespace", "net_namespace", "mount_namespace", "pid_namespace", "readonly_root",
                 "private_tmp", "no_remount", "no_network", "no_new_privs", "host_files_unchanged"):  # fmt: skip
        assert layers[name]["active"], (name, layers[name])


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def test_a_candidate_thread_dies_with_its_tracer_and_the_worker_serves_on(evaluator):
    """Candidate code runs in a disposable tracer: what it leaves running (a thread, a process) ends with it."""
    spawn = "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    evaluator.evaluate([Candidate("warm", MLP)], train=False)
    before, serial = set(evaluator.worker_pids()), evaluator._serial
    tree = {pid: _descendants(pid) for pid in before}
    (rec,) = evaluator.evaluate_bypassing([Candidate("thread", spawn)], "exec")
    assert rec.status == "ok"
    assert set(evaluator.worker_pids()) == before and evaluator._serial == serial  # the same worker, not replaced
    assert {pid: _descendants(pid) for pid in before} == tree  # launcher's tree as before: no tracer left
    (after,) = evaluator.evaluate([Candidate("after", MLP)], train=False)
    assert after.status == "ok"


def test_pool_size_follows_the_platform():
    assert placement.default_workers(SandboxConfig(workers=3), "cpu") == 3
    cores = len(os.sched_getaffinity(0))
    assert placement.default_workers(SandboxConfig(), "cpu") == cores
    assert placement.default_workers(SandboxConfig(threads_per_worker=2), "cpu") == max(1, cores // 2)
    assert placement.default_workers(SandboxConfig(), "tpu") == 1  # no chips enumerable here: one owns them


def test_temp_dirs_of_dead_evaluators_are_removed(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"cenas-sandbox-{int(dead.stdout)}-abc123"
    live = tmp_path / f"cenas-sandbox-{os.getpid()}-def456"
    other = tmp_path / "cenas-sandbox-notapid"
    for d in (stale, live, other):
        (d / "data").mkdir(parents=True)
    workspace.remove_stale_roots()
    assert not stale.exists() and live.exists() and other.exists()


LINEAR = MLP.replace("x = nn.relu(nn.Dense(32)(x))", "x = nn.Dense(32)(x)")


def test_degeneracy_flags_are_computed_in_the_worker_and_kept_on_the_record(evaluator):
    recs = {r.candidate_id: r for r in evaluator.evaluate([Candidate("mlp", MLP), Candidate("lin", LINEAR)], train=False)}
    assert recs["mlp"].ok and recs["mlp"].degenerate == ()
    assert recs["lin"].ok and [f.split(":")[0] for f in recs["lin"].degenerate] == ["linear"]
    assert recs["lin"].to_dict()["degenerate"] == list(recs["lin"].degenerate)


def test_degeneracy_flags_from_a_worker_are_sanitised():
    rec = records.record_from_worker("c", {"status": "ok", "degenerate": ["x" * 5000, 3, *["y"] * 20]}, 1.0, "digits")
    assert len(rec.degenerate) == 7 and len(rec.degenerate[0]) == 300 and 3 not in rec.degenerate  # 8 kept, 1 not text
    assert records.record_from_worker("c", {"status": "ok", "degenerate": "linear"}, 1.0, "digits").degenerate is None


def test_a_chatty_candidate_fills_only_its_own_output_not_the_next_candidates():
    """Output is capped per tracer (sandbox.file_size_mb), not per worker: after a candidate printed past the
    cap, a harmless program that prints 16 KB still evaluates in the same worker."""
    chatty = MLP.replace("        x = x.reshape", "        for _ in range(300):\n            print('x' * 8192)\n"
                                                  "        x = x.reshape")
    polite = MLP.replace("        x = x.reshape", "        for _ in range(2):\n            print('y' * 8192)\n"
                                                  "        x = x.reshape")
    cfg = _cfg(workers=1, file_size_mb=1)
    with Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1), cfg) as ev:
        recs = ev.evaluate([Candidate("chatty", chatty), Candidate("polite", polite), Candidate("again", polite)],
                           train=False)
        assert ev._serial == 1  # one worker served all three
    assert recs[0].status == "error" and "File too large" in (recs[0].error_message or "")
    assert [r.status for r in recs[1:]] == ["ok", "ok"], [r.error_message for r in recs]
