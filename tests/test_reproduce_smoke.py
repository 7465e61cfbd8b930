"""``make reproduce SMOKE=1`` end to end, on the CPU: the paper-scale plan's commands (six-dataset
overrides cut to the smoke size, NNGPT's sampling and LoRA settings, a Llama-family checkpoint
directory, on-disk data) run for real, on a tiny random Llama checkpoint with a character tokenizer
and CIFAR-10 pickles written in the real format. Only the accelerator check is stood in for.
"""

from __future__ import annotations

import json

import pytest
from test_data import _write_cifar
from test_llm_model import _save_char_tokenizer, _save_tiny

from cenas_jax.cli import main as cenas_main
from cenas_jax.reproduce import checks
from cenas_jax.reproduce import execute as ex
from cenas_jax.reproduce import plan as pl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # 6.5 minutes measured on a 2-core CPU


def test_paper_smoke_plan_runs_end_to_end_and_writes_its_summary(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "tiny-llama"
    _save_tiny(ckpt, "tied")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["max_position_embeddings"] = 16384  # character tokens: a corpus program is a few thousand
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _save_char_tokenizer(ckpt)
    data = tmp_path / "data"
    _write_cifar(data / "cifar-10-batches-py", [(f"data_batch_{i}", 40) for i in range(1, 6)] + [("test_batch", 40)],
                 "labels", 10)
    monkeypatch.setattr(checks, "check_devices", lambda: [checks.Check("devices", True, "CPU stand-in (test)")])
    out = tmp_path / "reproduce"
    rc = cenas_main(["reproduce", "paper", "--smoke", "--out", str(out), "--data-dir", str(data), "--llms", str(ckpt)])
    log = capsys.readouterr().out
    assert rc == 0, log
    plan = pl.paper_plan(out, [str(ckpt)], str(data), smoke=True)
    recs = [json.loads(x) for x in (out / ex.STEP_LOG).read_text().splitlines()]
    assert [r["step"] for r in recs] == [s.name for s in plan.steps]
    assert all(r["rc"] == 0 for r in recs), log
    for s in (s for s in plan.steps if s.kind == "run"):
        assert json.loads((s.out / "state.json").read_text())["status"] == "finished", s.name
        assert (s.out / "report" / "report.md").is_file()
    psnr = json.loads((out / "table_proxy_reliability-cifar10" / "proxy_snr.json").read_text())
    assert len(psnr["analysis"]["ids"]) == 4 and psnr["truth_epochs"] == 2
    retrained = json.loads((out / "retrain-2ep-llm1.json").read_text())
    assert retrained["epochs"] == 2 and any(r["status"] == "ok" for r in retrained["rows"])
    text = (out / "SUMMARY.md").read_text()
    assert text.startswith("# reproduce-smoke: our numbers beside the paper's")
    assert "| fig1_convergence-llm1 | " in text and "| controls_mutation | " in text and "## Wall time" in text
