"""The parent treats every byte from a worker as hostile: a fake worker speaking the wire protocol misbehaves."""

import struct
import textwrap

import pytest

from cenas_jax.candidates import handle
from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.records import Candidate
from cenas_jax.candidates.worker import FrameBuffer, encode_frame
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

# A test double of the worker: the candidate's source names how it misbehaves; "good" answers honestly.
FAKE_WORKER = textwrap.dedent('''
    import json, os, struct, sys
    spec = json.loads(sys.argv[1])
    out, tasks = spec["fd_results"], spec["fd_tasks"]

    def raw(fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def frame(obj):
        body = json.dumps(obj).encode()
        return struct.pack(">I", len(body)) + body

    def read_exact(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(tasks, n - len(buf))
            if not chunk:
                os._exit(0)
            buf += chunk
        return buf

    raw(out, frame({"type": "ready", "mode": "rlimits", "notes": []}))
    while True:
        (n,) = struct.unpack(">I", read_exact(4))
        task = json.loads(read_exact(n))
        how = task["source"]
        good = {"type": "result", "status": "ok", "accuracy": 0.5, "params": 7, "stage": "shape",
                "nonce": task["nonce"]}
        if how == "no_nonce":
            del good["nonce"]
        if how == "deep":
            body = b"[" * 100000 + b"]" * 100000
            raw(out, struct.pack(">I", len(body)) + body)
        elif how == "garbage":
            raw(out, struct.pack(">I", 5) + b"\\xff\\xfe{{{")
        elif how == "wrong_types":
            raw(out, frame({"type": "stage", "stage": ["x"], "nonce": task["nonce"]}) + frame(dict(good, type={"a": 1})))
        elif how == "stale_nonce":
            raw(out, frame(dict(good, nonce="0" * 16, accuracy=1.0)))
        elif how == "flood":
            while True:
                raw(out, frame({"type": "stage", "stage": "build", "nonce": task["nonce"]}) * 100)
        elif how == "huge":
            raw(out, struct.pack(">I", 1 << 30))
        elif how == "extra":
            raw(out, frame(dict(good, accuracy=0.9)) + frame(dict(good, accuracy=1.0)))
        else:
            raw(out, frame(good))
''')


@pytest.fixture()
def fake_pool(tmp_path, monkeypatch):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    monkeypatch.setattr(handle, "WORKER_BOOT", f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')")
    cfg = SandboxConfig(workers=1, timeout_s=20, check_timeout_s=20, memory_mb=3072, isolation="rlimits")
    with Evaluator(DataConfig(name="digits"), TrainConfig(epochs=1), cfg) as ev:
        yield ev


@pytest.mark.parametrize("attack", ["deep", "garbage", "wrong_types", "flood", "huge", "extra", "no_nonce", "stale_nonce"])
def test_a_misbehaving_worker_is_a_crash_record_and_the_parent_carries_on(fake_pool, attack):
    recs = fake_pool.evaluate([Candidate("bad", attack), Candidate("good", "good")], train=False)
    assert [r.candidate_id for r in recs] == ["bad", "good"]
    assert recs[0].status == "error" and recs[0].error_kind == "crash"
    assert "protocol violation" in recs[0].error_message
    assert (recs[1].status, recs[1].accuracy, recs[1].params) == ("ok", 0.5, 7)


def test_frame_buffer_turns_every_decode_error_into_value_error():
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(ValueError, match="undecodable"):
        FrameBuffer(cap=1 << 20).feed(struct.pack(">I", len(deep)) + deep)
    with pytest.raises(ValueError, match="undecodable"):
        FrameBuffer().feed(struct.pack(">I", 3) + b"\xff\xfe{")
    assert FrameBuffer().feed(encode_frame({"a": [1]})) == [{"a": [1]}]
