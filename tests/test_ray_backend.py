"""The Ray backend (``sandbox.backend: ray``): actor planning, the factory, Ray missing, what GPU actors start
their workers with, a malformed reply from an actor, records equal to the local pool's, and an actor killed
mid-run (every candidate back exactly once, with the local pool's numbers).

One local Ray per module: 4 logical CPUs (bookkeeping only: the pool's two CPU actors and the GPU test's two
actors; each actor runs one sandbox worker) and 2 declared GPUs that no code uses.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import pytest
from programs import mlp

from cenas_jax.candidates import backends, placement, ray_pool
from cenas_jax.candidates.errors import SandboxError
from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.ray_pool import RayEvaluator, plan_actors
from cenas_jax.candidates.records import Candidate
from cenas_jax.config import ConfigError, DataConfig, SandboxConfig, TrainConfig
from cenas_jax.errors import UserError

DATA = DataConfig(name="digits")
TRAIN = TrainConfig(epochs=1, batch_size=32)
LIMITS = dict(workers=1, timeout_s=120, check_timeout_s=30, memory_mb=3072, max_params=100_000)
POOL = SandboxConfig(**LIMITS, backend="ray", ray_actors=2, ray_gpus_per_actor=0)

CANDS = [Candidate(f"w{w}", mlp(w)) for w in (8, 16, 24, 32)]
BROKEN = [Candidate("syntax", "class Net(:\n"), Candidate("policy", "import os\n" + mlp(8))]
BOTH_SEEDS = Candidate("w16-seeds-0-1", mlp(16), seeds=2)  # local: seeds 0 and 1 in one task
SECOND_SEED = Candidate("w16-seed-1", mlp(16), seed_offset=1, seeds=1)  # ray: seed 1 alone


def _numbers(rec):
    """What must not depend on where a candidate ran."""
    return (rec.status, rec.error_kind, rec.stage, rec.accuracy, rec.seed_accuracies, rec.loss, rec.params,
            rec.flops, rec.structure_hash, rec.dataset)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Without a cluster
# ---------------------------------------------------------------------------


def _cfg(**kw) -> SandboxConfig:
    return SandboxConfig(backend="ray", **kw)


def test_actor_plan_per_node_and_per_gpu_group():
    cpu_nodes = [{"CPU": 8.0}, {"CPU": 16.0}, {"CPU": 4.0}]
    gpu_nodes = [{"CPU": 4.0}, {"CPU": 64.0, "GPU": 8.0}, {"CPU": 64.0, "GPU": 8.0}, {"CPU": 32.0, "GPU": 4.0}]
    assert plan_actors(cpu_nodes, _cfg()) == (3, 0)  # one CPU actor per node
    assert plan_actors(cpu_nodes, _cfg(ray_actors=5)) == (5, 0)
    assert plan_actors(gpu_nodes, _cfg()) == (2 + 2 + 1, 4)  # auto: the smallest GPU node's 4 GPUs per actor
    assert plan_actors(gpu_nodes, _cfg(ray_gpus_per_actor=1)) == (20, 1)
    assert plan_actors(gpu_nodes, _cfg(ray_gpus_per_actor=8)) == (2, 8)
    assert plan_actors(gpu_nodes, _cfg(ray_gpus_per_actor=8, ray_actors=1)) == (1, 8)
    assert plan_actors(gpu_nodes, _cfg(ray_gpus_per_actor=0)) == (4, 0)  # CPU actors on a GPU cluster
    with pytest.raises(UserError, match=r"ray_gpus_per_actor=16: no node .* \(GPUs per node: 0, 8, 8, 4\)"):
        plan_actors(gpu_nodes, _cfg(ray_gpus_per_actor=16))
    with pytest.raises(UserError, match="ray_gpus_per_actor=1: no node"):
        plan_actors(cpu_nodes, _cfg(ray_gpus_per_actor=1))
    assert ray_pool.cpus_per_actor(_cfg(workers=3, threads_per_worker=2)) == 6
    assert ray_pool.cpus_per_actor(_cfg()) == 1


@pytest.mark.parametrize("kw, match", [
    (dict(backend="slurm"), "sandbox.backend"),
    (dict(ray_actors=-1), "sandbox.ray_actors"),
    (dict(ray_gpus_per_actor=-2), "sandbox.ray_gpus_per_actor"),
    (dict(ray_address=" auto"), "sandbox.ray_address"),
])  # fmt: skip
def test_config_is_validated(kw, match):
    from cenas_jax.config import RunConfig, from_dict

    with pytest.raises(ConfigError, match=match):
        from_dict(RunConfig, {"sandbox": kw})


def test_without_ray_the_ray_backend_says_how_to_install_it(monkeypatch):
    import importlib.util

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UserError, match=r"sandbox.backend: ray needs Ray.*pip install -e '\.\[ray\]'"):
        backends.make_evaluator(DATA, TRAIN, _cfg())
    with pytest.raises(UserError, match=r"pip install -e '\.\[ray\]'"):
        backends.check_backend(_cfg())
    backends.check_backend(SandboxConfig())  # the local backend needs no Ray
    ev = backends.make_evaluator(DATA, TRAIN, SandboxConfig(workers=1))
    try:
        assert type(ev) is Evaluator  # exactly today's pool, no worker started yet
    finally:
        ev.close()


# ---------------------------------------------------------------------------
# On a local Ray
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test double actor below
    yield ray
    ray.shutdown()


class FakeActor:
    """A test double of ``SandboxActor`` that answers each candidate as its source says: "ok", "not-a-dict",
    "accuracy-7", "stale" (an extra record for a token it never got), "garbage" (a reply that is not JSON),
    "object" (a reply that is not text)."""

    def __init__(self, config_json: str) -> None:
        json.loads(config_json)

    def describe(self) -> str:
        return json.dumps({"pool_size": 4})

    def start(self) -> str:
        return self.describe()

    def exchange(self, batch_json: str, wait_s: float):
        out = []
        for c in json.loads(batch_json)["candidates"]:
            src, token = c["source"], c["token"]
            if src == "garbage":
                return '{"records": [{"token": '
            if src == "object":
                return {"records": []}
            if src == "not-a-dict":
                out.append({"token": token, "record": ["ok", 0.5]})
            elif src == "accuracy-7":
                out.append({"token": token, "record": {"status": "ok", "accuracy": 7.0, "seed_accuracies": [7.0]}})
            elif src == "stale":
                out.append({"token": "t999999", "record": {"status": "ok", "accuracy": 0.9}})
                out.append({"token": token, "record": {"status": "ok", "accuracy": 0.25, "seed_accuracies": [0.25]}})
            else:
                out.append({"token": token, "record": {"status": "ok", "accuracy": 0.5, "seed_accuracies": [0.5],
                                                       "params": 42, "wall_s": 1.5, "candidate_id": "someone-else",
                                                       "dataset": "cifar10"}})  # fmt: skip
        return json.dumps({"records": out})

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_malformed_reply_becomes_error_records_never_a_crash(ray_session):
    cfg = SandboxConfig(**LIMITS, backend="ray", ray_actors=1, ray_gpus_per_actor=0)
    with RayEvaluator(DATA, TRAIN, cfg, actor_class=FakeActor) as ev:
        recs = ev.evaluate([Candidate("a", "ok"), Candidate("b", "not-a-dict"), Candidate("c", "accuracy-7"),
                            Candidate("d", "stale")])  # fmt: skip
        a, b, c, d = recs
        # The id and dataset are the driver's own; the actor's wall time is kept when plausible.
        assert (a.candidate_id, a.status, a.accuracy, a.params, a.dataset, a.wall_s) == ("a", "ok", 0.5, 42, "digits", 1.5)
        assert (b.status, b.error_kind) == ("error", "crash") and "not an object" in b.error_message
        assert (c.status, c.error_kind, c.accuracy) == ("error", "crash", None)
        assert c.error_message.startswith("protocol violation: accuracy 7.0")
        assert (d.candidate_id, d.status, d.accuracy) == ("d", "ok", 0.25)
        assert ev.stale_records == 1
        for bad, why in (("garbage", "not JSON"), ("object", "a dict instead of JSON text")):
            recs = ev.evaluate([Candidate("x", "ok"), Candidate("y", bad)])
            assert [(r.candidate_id, r.status, r.error_kind) for r in recs] == [("x", "error", "crash"),
                                                                                 ("y", "error", "crash")]
            assert all(r.error_message.startswith("protocol violation: the Ray actor sent a malformed reply: " + why)
                       for r in recs)  # fmt: skip
        assert len(ev.losses) == 2  # each broken actor was replaced
        (again,) = ev.evaluate([Candidate("z", "ok")])
        assert (again.status, again.accuracy) == ("ok", 0.5)


def test_gpu_actors_get_their_gpus_from_ray_and_their_workers_our_placement(ray_session):
    """Declared GPUs: each actor sees the GPUs Ray gave it in CUDA_VISIBLE_DEVICES, and would start one worker
    per GPU (x workers_per_device) pinned to it; no GPU code runs."""
    allowed = {"CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE",
               "XLA_PYTHON_CLIENT_MEM_FRACTION", *placement.PASS_THROUGH["gpu"]}  # fmt: skip
    cfg = SandboxConfig(backend="ray", ray_gpus_per_actor=1, workers_per_device=2)
    with RayEvaluator(DATA, TRAIN, cfg) as ev:
        infos = ev.describe()
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["0", "1"]  # one GPU each, set by Ray
    for info in infos:
        gpu = info["cuda_visible_devices"]
        assert info["inventory"]["platform"] == "gpu" and info["inventory"]["devices"] == [gpu]
        assert info["pool_size"] == 2 and info["worker_pids"] == []
        for env in info["placements"]:
            assert set(env) <= allowed
            assert (env["CUDA_VISIBLE_DEVICES"], env["JAX_PLATFORMS"], env["XLA_PYTHON_CLIENT_PREALLOCATE"],
                    env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == (gpu, "cuda", "false", "0.3750")  # 0.75 / 2
    with RayEvaluator(DATA, TRAIN, SandboxConfig(backend="ray")) as ev:  # auto: the node's GPUs in one actor
        (info,) = ev.describe()
    gpus = info["cuda_visible_devices"].split(",")
    assert sorted(gpus) == ["0", "1"] and info["inventory"]["devices"] == gpus
    assert [env["CUDA_VISIBLE_DEVICES"] for env in info["placements"]] == gpus  # a worker per GPU
    assert {env["XLA_PYTHON_CLIENT_MEM_FRACTION"] for env in info["placements"]} == {"0.7500"}


@pytest.fixture(scope="module")
def local_records():
    """The local pool's records of the same candidates: what the Ray pool must reproduce, number for number."""
    sandbox = SandboxConfig(**LIMITS)
    with Evaluator(DATA, TRAIN, sandbox, seed=3) as ev:
        recs = ev.evaluate([*CANDS, *BROKEN, BOTH_SEEDS])
    return {r.candidate_id: r for r in recs}


@pytest.fixture(scope="module")
def pool(ray_session):
    with RayEvaluator(DATA, TRAIN, POOL, seed=3) as ev:
        ev.start()
        yield ev


def test_records_through_ray_equal_the_local_pools(pool, local_records):
    views = pool.actors()
    assert len(views) == 2 and all(v.state == "ready" and v.info["pool_size"] == 1 for v in views)
    # a CPU actor's one worker: no device variables, at most the core it is pinned to
    assert all(v.info["inventory"]["platform"] == "cpu" and len(v.info["placements"]) == 1
               and set(v.info["placements"][0]) <= {"CENAS_CPU_CORES"} for v in views)
    recs = pool.evaluate([*CANDS, *BROKEN, SECOND_SEED])
    assert [r.candidate_id for r in recs] == [c.id for c in [*CANDS, *BROKEN, SECOND_SEED]]
    for r in recs[: len(CANDS) + len(BROKEN)]:
        assert _numbers(r) == _numbers(local_records[r.candidate_id])
    assert all(r.ok and 0.4 < r.accuracy <= 1.0 for r in recs[: len(CANDS)])
    assert [r.error_kind for r in recs[len(CANDS): -1]] == ["syntax", "policy"]
    # A task of seed 1 alone trains what seed 1 trains in a task of seeds 0 and 1.
    assert recs[-1].seed_accuracies == local_records[BOTH_SEEDS.id].seed_accuracies[1:]
    assert pool.losses == [] and pool.stale_records == 0


def test_an_abandoned_evaluation_leaves_nothing_behind(pool, local_records):
    """Leaving ``evaluate_iter`` early: the actors drop what they hold (their busy workers retired), and the
    next evaluation gets its own records only, with the local pool's numbers."""
    it = pool.evaluate_iter(CANDS)
    first = next(it)
    assert _numbers(first) == _numbers(local_records[first.candidate_id])
    it.close()
    assert all(v.in_flight == () for v in pool.actors())
    again = pool.evaluate(CANDS[:2])
    assert [r.candidate_id for r in again] == [c.id for c in CANDS[:2]]
    assert all(_numbers(r) == _numbers(local_records[r.candidate_id]) for r in again)
    assert pool.losses == []


def test_an_actor_killed_mid_run_loses_and_repeats_nothing(pool, local_records, ray_session):
    got, killed = [], None
    for rec in pool.evaluate_iter(CANDS):
        got.append(rec)
        if killed is None:
            victim = max(pool.actors(), key=lambda v: len(v.in_flight))
            assert victim.in_flight, "no candidate in flight to lose"
            killed = victim
            ray_session.kill(victim.handle, no_restart=True)
    assert sorted(r.candidate_id for r in got) == sorted(c.id for c in CANDS)  # each exactly once
    for r in got:
        assert _numbers(r) == _numbers(local_records[r.candidate_id])
    assert len(pool.losses) == 1 and "Actor" in pool.losses[0]
    assert killed.key not in [v.key for v in pool.actors()]  # replaced by a new actor
    assert len(pool.actors()) == 2
    deadline = time.monotonic() + 20  # its sandbox workers die with it (their lifeline pipe)
    while any(_alive(p) for p in killed.info["worker_pids"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in killed.info["worker_pids"])


def test_candidates_of_a_lost_actor_are_retried_a_bounded_number_of_times(ray_session, monkeypatch):
    """An actor that is lost with the same candidate every time: after ``_MAX_LOSSES`` losses the candidate
    gets a crash record, and the candidate lost beside it the first time comes back."""

    class Dies(FakeActor):
        def exchange(self, batch_json, wait_s):
            if any(c["source"] == "kills-its-actor" for c in json.loads(batch_json)["candidates"]):
                import os

                os._exit(1)
            return super().exchange(batch_json, wait_s)

    cfg = SandboxConfig(**LIMITS, backend="ray", ray_actors=1, ray_gpus_per_actor=0)
    with RayEvaluator(DATA, TRAIN, cfg, actor_class=Dies) as ev:
        ok, bad = ev.evaluate([Candidate("fine", "ok"), Candidate("deadly", "kills-its-actor")])
    assert (ok.status, ok.accuracy) == ("ok", 0.5)  # lost once beside it, then sent alone
    assert (bad.status, bad.error_kind) == ("error", "crash")
    assert bad.error_message.startswith(f"its Ray actor was lost {ray_pool._MAX_LOSSES} times")
    assert len(ev.losses) == ray_pool._MAX_LOSSES


def test_every_actor_gone_is_a_clear_error(ray_session):
    class NeverStarts(FakeActor):
        def start(self):
            raise RuntimeError("no sandbox here")

    cfg = SandboxConfig(**LIMITS, backend="ray", ray_actors=1, ray_gpus_per_actor=0)
    with RayEvaluator(DATA, TRAIN, cfg, actor_class=NeverStarts) as ev:
        with pytest.raises(SandboxError, match="every Ray actor of the sandbox pool is lost") as e:
            ev.evaluate([Candidate("a", "ok")])
        assert "no sandbox here" in str(e.value)
        assert len(ev.losses) == 1 + ray_pool._REPLACEMENTS_PER_ACTOR


def test_the_factory_builds_the_ray_pool_and_leaves_a_ray_it_joined_running(ray_session):
    """``make_evaluator`` builds the Ray pool for ``sandbox.backend: ray``; Ray was up: joined, not owned."""
    ev = backends.make_evaluator(DATA, TRAIN, dataclasses.replace(POOL, ray_actors=1), seed=3, eval_split="test")
    try:
        assert isinstance(ev, RayEvaluator) and (ev.seed, ev.eval_split, ev.cfg.ray_actors) == (3, "test", 1)
    finally:
        ev.close()
    assert ray_pool.import_ray().is_initialized()  # closing a pool that joined Ray leaves Ray running


@pytest.mark.slow
def test_cenas_proxy_snr_on_ray_in_seed_groups_gives_the_local_pools_numbers(ray_session, tmp_path):
    """`cenas proxy-snr --set sandbox.backend=ray` with one seed per task, on the module's Ray (joined): its
    proxy scores are those of the local pool training each architecture's two seeds in one task."""
    from cenas_jax.cli import main
    from cenas_jax.config import load_config
    from cenas_jax.proxy_snr import experiment

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        "data: {name: digits}\nsandbox: {workers: 1, ray_actors: 2, ray_gpus_per_actor: 0}\n"
        "proxy_snr: {architectures: [mlp_small, mlp_deep_dropout, mlp_residual_layernorm, lenet5],"
        " seeds: 2, proxy_epochs: 0.5, truth_epochs: 1.0, n_boot: 50}\n"
    )
    out = tmp_path / "out"
    assert main(["proxy-snr", str(cfg_path), "--out", str(out), "--no-progress",
                 "--set", "sandbox.backend=ray", "--set", "proxy_snr.seeds_per_task=1"]) == 0  # fmt: skip
    doc = json.loads((out / experiment.RESULT_JSON).read_text())
    assert doc["failures"] == [] and doc["config"]["sandbox"]["backend"] == "ray"
    cfg = load_config(str(cfg_path), [])
    archs, _ = experiment.select_architectures(cfg)
    local = experiment.evaluator_score_fn(cfg.data, cfg.sandbox)(archs, experiment._proxy_truth_cfgs(cfg)[0], cfg.seed)
    assert doc["analysis"]["proxy_scores"] == [list(s.seed_accuracies) for s in local]
