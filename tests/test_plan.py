"""`cenas plan` (cenas_jax/plan/): the prediction's arithmetic on a hand-computed case, how it scales with hosts
and devices, the dominant phase, calibration on a run store written here, the LLM's size from its files' headers,
the CLI's output and errors, and `cenas reproduce paper --check` printing the prediction."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cenas_jax.candidates.corpus import load_corpus
from cenas_jax.cli import main as cenas_main
from cenas_jax.config import RunConfig, from_dict, to_dict
from cenas_jax.errors import UserError
from cenas_jax.plan import CostModel, Workload, default_costs, load_costs, predict
from cenas_jax.plan import inputs as plan_inputs
from cenas_jax.plan.calibrate import calibrate, measure_run
from cenas_jax.plan.costs import SMOLLM2_135M_PARAMS
from cenas_jax.reproduce import plan as rplan
from cenas_jax.reproduce.costs import plan_cost
from cenas_jax.rundir import LoopState, RunDir
from cenas_jax.search.prompts import load_template
from cenas_jax.store import CandidateRow, RunStore

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "experiments" / "configs" / "quickstart.yaml")


def round_costs(device: str = "gpu", **changes) -> CostModel:
    """Figures with round numbers, so the prediction can be worked out by hand."""
    values = dict(prefill_tok_s=1000.0, decode_tok_s=100.0, batch=4, decode_batch_exponent=1.0, finetune_tok_s=200.0,
                  update_overhead_s=10.0, ref_params=1e8, llm_load_s=30.0, step_s=0.01, step_pixels=64, step_batch=32,
                  compile_s=2.0, check_s=0.5, pool_efficiency=1.0)
    values.update(changes)
    return CostModel(device=device, **values)


def small_cfg(**search) -> RunConfig:
    """digits (1,797 images: 1,257 train after 15% val and 15% test), batch 32 (39 steps), 2 seeds, 8 slots."""
    return from_dict(RunConfig, {
        "data": {"name": "digits"}, "train": {"epochs": 1.0, "batch_size": 32, "seeds": 2},
        "llm": {"sampling": {"batch_size": 4}, "finetune": {"epochs": 2.0}},
        "search": {"cycles": 5, "candidates_per_cycle": 8, "mode": "mixed", "delta_share": 0.5, "elite_rho": 0.25,
                   "replay_weight": 1.0, "update_token_budget": 100_000, **search}})


WORKLOAD = Workload(generations_per_slot=1.5, trained_share=0.5, prompt_tokens={"full": 600.0, "delta": 400.0},
                    new_tokens={"full": 300.0, "delta": 100.0})
WARM = plan_inputs.WarmStart("trained", pairs=10, passes=2, tokens=5000.0)


def small_prediction(hosts=1, devices=2, costs=None, workload=WORKLOAD, cfg=None):
    return predict(cfg or small_cfg(), costs or round_costs(), hosts, devices, workload=workload, model_params=2e8,
                   warm=WARM, corpus=4)


# ---------------------------------------------------------------------------------------------- the arithmetic


def test_prediction_of_a_small_case_matches_the_hand_computation():
    p = small_prediction()
    # 8 slots x 1.5 = 12 generations of 500 prompt + 200 new tokens (half delta); a model twice ref_params halves
    # the rates: 12 x 500 / 500 + 12 x 200 / 50 = 60 s; checks 12 x 0.5 s over 2 workers = 3 s.
    assert p.workers_per_host == 2
    assert p.phase("generate").parts == pytest.approx({"sampling": 60.0, "checks": 3.0})
    assert p.phase("generate").seconds == pytest.approx(63.0)
    # 4 trained x (2 s compile + 2 seeds x 39 steps x 0.01 s) over 2 workers.
    assert p.phase("train").seconds == pytest.approx(4 * 2.78 / 2)
    assert p.phase("select").seconds == 0.0
    # 1 elite (ceil(0.25 x 4)) + 1 replayed pair of 700 tokens, 2 passes, at 200 / 2 tok/s x 2 devices.
    assert p.phase("update").seconds == pytest.approx(10 + 2 * 2 * 700 / 200)
    assert p.cycle_s == pytest.approx(63 + 5.56 + 24)
    assert p.phase("llm_load").seconds == pytest.approx(60.0)
    assert p.phase("reference").seconds == pytest.approx(4 * 2.78 / 2)
    assert p.phase("warm_start").seconds == pytest.approx(10 + 2 * 5000 / 200)
    assert p.wall_s == pytest.approx(125.56 + 5 * 92.56)
    assert p.device_hours == pytest.approx(2 * (125.56 + 5 * 92.56) / 3600)
    assert p.dominant == "generate" and p.share("generate") == pytest.approx(63 / 92.56)
    assert sum(p.share(x) for x in ("generate", "train", "select", "update")) == pytest.approx(1.0)


def test_train_halves_with_twice_the_workers_and_update_with_twice_the_devices():
    every_slot = Workload(trained_share=1.0)  # 8 candidates: more than the workers of every case below
    one = small_prediction(1, 2, workload=every_slot)
    hosts = small_prediction(2, 2, workload=every_slot)
    devices = small_prediction(1, 4, workload=every_slot)
    for twice in (hosts, devices):
        assert twice.phase("train").seconds == pytest.approx(one.phase("train").seconds / 2)
        assert twice.phase("reference").seconds == pytest.approx(one.phase("reference").seconds / 2)
        fixed = 10.0
        assert twice.phase("update").seconds - fixed == pytest.approx((one.phase("update").seconds - fixed) / 2)
        assert twice.device_hours == pytest.approx(2 * twice.wall_s / 3600 * 2)
    # Each host samples its share of the prompts; more devices on one host do not sample faster.
    assert hosts.phase("generate").parts["sampling"] == pytest.approx(one.phase("generate").parts["sampling"] / 2)
    assert devices.phase("generate").parts["sampling"] == pytest.approx(one.phase("generate").parts["sampling"])
    # More workers than candidates: the extra ones idle.
    assert small_prediction(1, 16, workload=every_slot).phase("train").seconds == pytest.approx(
        small_prediction(1, 8, workload=every_slot).phase("train").seconds)


def test_on_cpu_cores_are_workers_at_the_pools_efficiency_and_fine_tuning_does_not_split_over_cores():
    cpu = round_costs("cpu", pool_efficiency=0.5)
    one, two = small_prediction(1, 1, cpu), small_prediction(1, 2, cpu)
    assert one.workers_per_host == 1 and two.workers_per_host == 2
    # 4 candidates on one worker, or on two at half a lone worker's speed: the same time.
    assert two.phase("train").seconds == pytest.approx(one.phase("train").seconds)
    assert two.phase("update").seconds == pytest.approx(one.phase("update").seconds)
    assert one.phase("update").seconds == pytest.approx(10 + 2 * 2 * 700 / 100)


def test_the_dominant_phase_is_named_in_words():
    p = small_prediction(costs=round_costs(finetune_tok_s=1.0))
    assert p.dominant == "update"
    assert p.dominance().startswith(f"The update phase dominates: {p.share('update'):.0%} of each cycle")
    slow_steps = small_prediction(costs=round_costs(step_s=10.0))
    assert slow_steps.dominant == "train" and "proxy training" in slow_steps.dominance()
    g = small_prediction()
    assert "sampling" in g.dominance() and "checks" in g.dominance()


def test_mutation_runs_have_no_llm_costs_and_max_wall_caps_the_run():
    p = predict(small_cfg(generator="mutation"), round_costs(), 1, 2, workload=WORKLOAD, corpus=4)
    assert p.model is None and p.model_params is None
    assert p.phase("generate").seconds == pytest.approx(3.0)  # the cheap checks only
    assert p.phase("update").seconds == 0 and p.phase("llm_load").seconds == 0 and p.phase("warm_start").seconds == 0
    capped = predict(small_cfg(max_wall_s=300.0), round_costs(), 1, 2, workload=WORKLOAD, model_params=2e8,
                     warm=WARM, corpus=4)
    assert capped.wall_s == 300.0 and capped.cycles_run == math.floor((300 - 125.56) / 92.56) == 1


def test_token_caps_of_the_config_bound_the_answers():
    capped = small_prediction(cfg=from_dict(RunConfig, {**to_dict(small_cfg()), "llm": {
        "sampling": {"batch_size": 4, "max_new_tokens": 150, "max_new_tokens_delta": 50},
        "finetune": {"epochs": 2.0}}}))
    # 12 x (0.5 x 50 + 0.5 x 150) = 1,200 new tokens at 50/s.
    assert capped.phase("generate").parts["sampling"] == pytest.approx(12.0 + 1200 / 50)


# ---------------------------------------------------------------------------------------------- figures


def test_costs_file_replaces_the_figures_it_names_and_names_a_bad_key(tmp_path):
    f = tmp_path / "costs.yaml"
    f.write_text("gpu:\n  decode_tok_s: 2500\n  step_pixels: 1024\ntpu: {compile_s: 3}\n")
    got = load_costs(f)
    assert set(got) == {"gpu", "tpu"}
    assert got["gpu"].decode_tok_s == 2500 and got["gpu"].sources["decode_tok_s"] == f"from {f}"
    assert got["gpu"].finetune_tok_s == default_costs("gpu").finetune_tok_s and got["gpu"].is_assumed("finetune_tok_s")
    for text, message in [("gpu: {decode_tokens: 5}", "gpu.decode_tokens: unknown figure"),
                          ("gpu: {step_s: fast}", "gpu.step_s: expected a number"),
                          ("gpu: {step_s: -1}", "gpu.step_s: must be > 0"),
                          ("cpu: {pool_efficiency: 1.5}", "cpu.pool_efficiency: must be in (0, 1]"),
                          ("gpu: {batch: 2.5}", "gpu.batch: expected a whole number"),
                          ("npu: {step_s: 1}", "unknown device 'npu'"),
                          ("gpu: 3", "gpu: expected a mapping of figures"),
                          ("[1, 2]", "expected a mapping of device"),
                          ("gpu: [", "not valid YAML")]:
        f.write_text(text)
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_costs(f)
    with pytest.raises(UserError, match="costs file not found"):
        load_costs(tmp_path / "nope.yaml")


def test_every_default_figure_says_where_it_comes_from_and_accelerator_llm_figures_are_assumptions():
    for device in ("cpu", "gpu", "tpu"):
        c = default_costs(device)
        assert all(c.sources.get(k) for k in c.to_dict()), device
    cpu, gpu, tpu = default_costs("cpu"), default_costs("gpu"), default_costs("tpu")
    assert not any(cpu.is_assumed(k) for k in cpu.to_dict())
    for k in ("prefill_tok_s", "decode_tok_s", "finetune_tok_s", "ref_params"):
        assert gpu.is_assumed(k) and tpu.is_assumed(k)
    assert all(tpu.is_assumed(k) for k in tpu.to_dict())
    assert cpu.ref_params == SMOLLM2_135M_PARAMS
    with pytest.raises(UserError, match="unknown device 'npu'"):
        default_costs("npu")


def test_llm_size_is_read_from_gguf_and_safetensors_headers(tmp_path):
    import gguf
    from safetensors.numpy import save_file

    assert plan_inputs.model_params("smollm2-135m") == SMOLLM2_135M_PARAMS  # SmolLM2-135M: 134.5M parameters
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("tokenizer.ggml.scores", [0.5, 1.5, 2.5])
    w.add_uint32("llama.block_count", 2)
    w.add_string("general.name", "tiny")
    w.add_tensor("token_embd.weight", np.zeros((3, 4), np.float32))
    w.add_tensor("output_norm.weight", np.zeros((5,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert plan_inputs.model_params(str(tmp_path / "m.gguf")) == 17
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    save_file({"a": np.zeros((2, 3), np.float32), "b": np.zeros((7,), np.float32)}, str(d / "model-1.safetensors"),
              metadata={"format": "pt"})
    save_file({"c": np.zeros((4, 4), np.float16)}, str(d / "model-2.safetensors"))
    assert plan_inputs.model_params(str(d)) == 6 + 7 + 16
    (d / "model-2.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(UserError, match="not a readable safetensors file.*--model-params"):
        plan_inputs.model_params(str(d))
    with pytest.raises(UserError, match="not found"):
        plan_inputs.model_params(str(tmp_path / "missing"))


def test_dataset_shapes_follow_the_split_settings():
    cfg = small_cfg()
    assert plan_inputs.dataset_shape("digits", cfg.data) == plan_inputs.DatasetShape("digits", 1257, 8, 8, 1)
    assert plan_inputs.dataset_shape("cifar10", cfg.data).train_examples == 50_000 - 7_500
    celeba = plan_inputs.dataset_shape("celeba", from_dict(RunConfig, {"data": {"image_size": 48}}).data)
    assert (celeba.height, celeba.width, celeba.channels, celeba.train_examples) == (48, 48, 3, 162_770)
    capped = from_dict(RunConfig, {"data": {"max_train": 100}}).data
    assert plan_inputs.dataset_shape("mnist", capped).train_examples == 100
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        plan_inputs.dataset_shape("nope", cfg.data)


# ---------------------------------------------------------------------------------------------- --from-run

SYSTEM = len(load_template("system").template)


def write_run(path: Path) -> Path:
    """A finished run of 2 cycles x 4 slots (2 delta, 2 full) on a 2-core CPU, each cycle alike: 6 generations (a
    delta and a full slot resampled), 2 trained; the corpus is 2 programs; timings chosen by hand (update: 700 and 2,100
    tokens in 13.5 and 20.5 s: a line of 10 s + 1 s per 200 tokens)."""
    corpus = [e.name for e in load_corpus()][:2]
    cfg = from_dict(RunConfig, {
        "data": {"name": "digits"}, "train": {"epochs": 1.0, "batch_size": 64, "seeds": 1},
        "llm": {"finetune": {"epochs": 1.0}},
        "search": {"cycles": 2, "candidates_per_cycle": 4, "mode": "mixed", "delta_share": 0.5, "elite_rho": 0.25,
                   "update_token_budget": 100_000, "corpus": corpus}})
    rd = RunDir(path)
    rd.create(cfg, {"cpu_count": 2, "jax_backend": "cpu x1"})
    ev = {"status": "ok", "accuracy": 0.5, "seed_accuracies": [0.5], "compile_s": 2.9, "train_s": 0.5, "wall_s": 3.5}
    with RunStore(path) as store:
        rid = store.create_run("main", to_dict(cfg))
        for i, name in enumerate(corpus):
            store.add_candidate(CandidateRow(id=f"L-digits-{name}", source="x", run_id=rid, cycle=-1, idx=i,
                                             mode="corpus", dataset="digits"))
            store.add_evaluation(f"L-digits-{name}", ev, dataset="digits")
        store.add_timing(rid, -1, "reference", 3.5)
        store.set_cycle(rid, -1, warm_start={"key": "k", "reused": True})
        for t, (tokens, update_s) in enumerate([(700, 13.5), (2100, 20.5)]):
            slots = [(0, "delta", 0), (1, "delta", 0), (2, "full", 0), (3, "full", 0), (1, "delta", 1), (3, "full", 1)]
            for idx, mode, attempt in slots:
                cid = f"s0-c{t:03d}-{idx:03d}-a{attempt}"
                user = "u" * ((400 if mode == "delta" else 600) * 3 - SYSTEM)  # 400 / 600 tokens at 3 chars each
                store.add_candidate(CandidateRow(id=cid, source="y", run_id=rid, cycle=t, idx=idx, mode=mode,
                                                 dataset="digits", prompt=user, raw_text="r", attempt=attempt,
                                                 token_count=100 if mode == "delta" else 300))
                if (idx, attempt) in ((0, 0), (2, 0)):
                    store.add_evaluation(cid, ev, dataset="digits")
            for phase, secs in (("sample", 40.0), ("generate", 42.0), ("train", 3.5), ("select", 0.0),
                                ("update", update_s)):
                store.add_timing(rid, t, phase, secs)
            store.set_cycle(rid, t, update={"examples": 2, "steps": 1, "tokens": tokens, "seconds": update_s - 1})
        store.set_run_status(rid, "finished")
    rd.save_state(LoopState(cycle=2, phase="done", status="finished"))
    return path


def test_calibration_fits_the_figures_and_then_predicts_the_run_it_was_fitted_on(tmp_path):
    m = measure_run(write_run(tmp_path / "run"))
    assert (m.device, m.devices_per_host, len(m.cycles), m.reference_s, m.warm_reused) == ("cpu", 2, 2, 3.5, True)
    assert [c.n_generations for c in m.cycles] == [6, 6] and [c.trained for c in m.cycles] == [2, 2]
    base = default_costs("cpu")
    cal = calibrate(m, base, model_params=base.ref_params)
    w = cal.workload
    assert (w.generations_per_slot, w.trained_share) == (1.5, 0.5)
    assert w.prompt_tokens == {"full": pytest.approx(600), "delta": pytest.approx(400)}
    assert w.new_tokens == {"full": 300, "delta": 100}
    c = cal.costs
    # Sampling: 3 x 400 + 3 x 600 prompt tokens and 3 x 100 + 3 x 300 new tokens (6 rows) took 40 s a cycle.
    expected = 3000 / 512 + 1200 / (58 * (6 / 16) ** 0.61)
    assert c.prefill_tok_s == pytest.approx(512 * expected / 40) and c.decode_tok_s == pytest.approx(58 * expected / 40)
    # Checks: 2 s beyond sampling for 6 generations on 2 workers at 0.68 each.
    assert c.check_s == pytest.approx(2 * 2 * 0.68 / 6)
    # 6 evaluations (2 corpus, 2 + 2 candidates), each 2 at a time: 0.5 s for 19 steps of 8x8 images, 3 s beyond.
    assert c.step_s == pytest.approx(0.5 * 0.68 / (19 * 64 / 784))
    assert c.compile_s == pytest.approx(3.0 * 0.68)
    assert c.update_overhead_s == pytest.approx(10.0) and c.finetune_tok_s == pytest.approx(200.0)
    assert c.sources["step_s"] == f"calibrated from {m.run_dir}" and c.llm_load_s == base.llm_load_s
    assert set(cal.changed) == {"prefill_tok_s", "decode_tok_s", "check_s", "step_s", "compile_s",
                                "update_overhead_s", "finetune_tok_s"}
    # What the model predicts for the run with the fitted figures is what was measured.
    after = cal.predicted(cal.after)
    for phase, measured in cal.measured.items():
        assert after[phase] == pytest.approx(measured), phase
    assert cal.measured == {"generate": 42.0, "train": 3.5, "select": 0.0, "update": 17.0, "reference": 3.5}
    before = cal.predicted(cal.before)
    assert before["generate"] != pytest.approx(42.0)  # the built-in figures are another machine state's


def test_measure_run_refuses_what_is_not_a_finished_run(tmp_path):
    with pytest.raises(UserError, match="is not a run directory"):
        measure_run(tmp_path)
    rd = RunDir(tmp_path / "empty")
    rd.create(small_cfg(), {})
    with pytest.raises(UserError, match="no store.sqlite"):
        measure_run(rd.path)
    with RunStore(rd.path) as store:
        rid = store.create_run("main", {})
        store.add_timing(rid, 0, "generate", 1.0)
    with pytest.raises(UserError, match="no cycle finished"):
        measure_run(rd.path)


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_prints_the_table_the_dominant_phase_the_totals_and_the_assumptions(capsys):
    args = [QUICKSTART, "--device", "gpu", "--hosts", "2", "--devices-per-host", "4", "--model-params", "7B"]
    assert cenas_main(["plan", *args]) == 0
    out = capsys.readouterr().out
    from cenas_jax.config import load_config

    pred = predict(load_config(QUICKSTART), default_costs("gpu"), 2, 4, model_params=7e9)
    assert "on gpu: 2 host(s) x 4 GPU(s), 4 sandbox worker(s) per host" in out
    for p in pred.cycle:
        assert f"  {p.name:<11} {p.seconds:>9.1f} {pred.share(p.name):>6.0%}" in out
    assert pred.dominance() in out
    assert f"{pred.device_hours:,.2f} GPU-hours (2 x 4 GPU(s)" in out
    assert "ASSUMPTIONS where so labelled" in out and "decode_tok_s = 1800: assumption:" in out
    assert "7,000,000,000 / 7,000,000,000" in out  # the model's size against the figures' reference size
    assert cenas_main(["plan", *args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["device_hours"] == pytest.approx(pred.device_hours, rel=1e-3)
    assert data["dominant"] == pred.dominant and set(data["per_cycle"]) == {"generate", "train", "select", "update"}
    assert sum(v["share"] for v in data["per_cycle"].values()) == pytest.approx(1.0, abs=1e-3)
    assert data["figures"]["decode_tok_s"]["source"].startswith("assumption")


def test_cli_from_run_prints_measured_beside_predicted_and_predicts_the_run(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert cenas_main(["plan", "--from-run", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"calibrated from {run}: 2 finished cycle(s) on cpu (2 core(s))" in out
    assert "  train             3.5" in out and "  reference         3.5" in out
    assert f"cenas plan: {run} (its config) on cpu: 1 host(s) x 2 core(s)" in out
    assert f"calibrated from {run}" in out.split("figures (cpu")[1]
    assert cenas_main(["plan", QUICKSTART, "--from-run", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for phase, row in data["calibration"]["phases"].items():
        assert row["calibrated"] == pytest.approx(row["measured"], abs=1e-3), phase
    assert data["workload"]["trained_share"] == 0.5 and data["device"] == "cpu"
    assert cenas_main(["plan", QUICKSTART, "--from-run", str(run), "--device", "gpu", "--model-params", "7B"]) == 0
    assert "the figures calibrated on" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    ([], "cenas plan needs a CONFIG"),
    ([QUICKSTART, "--set", "search.nope=1"], "nope"),
    ([QUICKSTART, "--set", "search.cycles=0"], "search.cycles: must be >= 1"),
    (["no-such.yaml"], "config file not found: no-such.yaml"),
    ([QUICKSTART, "--set", "data.name=nope"], "unknown dataset 'nope'"),
    ([QUICKSTART, "--set", "llm.model.name=/no/such/model"], "--model-params"),
])
def test_cli_errors_are_one_line_and_exit_2(args, message, capsys):
    assert cenas_main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cenas: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_an_unknown_device_a_bad_count_and_a_malformed_costs_file(tmp_path, capsys):
    for args, message in [(["--device", "npu"], "invalid choice: 'npu'"), (["--hosts", "0"], "expected a whole number"),
                          (["--model-params", "lots"], "expected a parameter count")]:
        with pytest.raises(SystemExit) as e:
            cenas_main(["plan", QUICKSTART, *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
    f = tmp_path / "c.yaml"
    f.write_text("gpu: {decode_tok_s: 0}\n")
    assert cenas_main(["plan", QUICKSTART, "--costs", str(f)]) == 2
    assert "gpu.decode_tok_s: must be > 0" in capsys.readouterr().err
    assert cenas_main(["plan", "--from-run", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_cli_help_explains_the_model_and_the_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cenas_main(["plan", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for text in ("generate =", "train    =", "update   =", "device-hours", "--hosts", "--devices-per-host",
                 "--device", "--costs", "--from-run", "--model-params", "--json", "decode_tok_s", "pool_efficiency",
                 "assumptions"):
        assert text in out, text


# ---------------------------------------------------------------------------------------------- reproduce


def test_reproduce_check_prints_the_prediction_of_every_search_run_and_the_total(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("LLMS", raising=False)
    out_dir = tmp_path / "rep"
    rc = cenas_main(["reproduce", "paper", "--check", "--out", str(out_dir), "--device", "gpu", "--hosts", "2",
                     "--devices-per-host", "4"])
    text = capsys.readouterr().out
    assert rc == 1 and "nothing was run" in text  # the data and checkpoints are still missing here
    plan = rplan.paper_plan(out_dir, [], None)
    pc = plan_cost(plan, default_costs("gpu"), 2, 4)
    assert "cenas plan's prediction on 2 host(s) x 4 GPU(s)" in text
    runs = [s.name for s in plan.steps if s.kind == "run"]
    assert [n for n, _ in pc.runs] == runs and len(runs) == 9
    for name, p in pc.runs:
        row = next(line for line in text.splitlines() if line.startswith(f"  {name} "))
        assert f"{p.dominant} {p.share(p.dominant):.0%}" in row and f"{p.device_hours:,.1f}" in row
        assert p.cycles == 22
        assert p.model_params == (None if name == "controls_mutation" else 7e9)  # unreadable checkpoints: 7B
    assert f"total: {pc.device_hours:,.1f} GPU-hours" in text
    # The warm start is trained once per (model, key): the ablation reuses fig1's.
    assert pc.runs[runs.index("ablation_novelty-llm1")][1].phase("warm_start").seconds == 0
    assert pc.runs[runs.index("fig1_convergence-llm1")][1].phase("warm_start").seconds > 0
    costs = tmp_path / "c.yaml"
    costs.write_text("gpu: {step_s: 1.0}\n")
    assert cenas_main(["reproduce", "paper", "--check", "--out", str(out_dir), "--device", "gpu", "--costs",
                       str(costs)]) == 1
    text = capsys.readouterr().out
    for name in runs:
        row = next(line for line in text.splitlines() if line.startswith(f"  {name} "))
        assert " train 9" in row or " train 100%" in row, row  # slow proxy steps: training dominates every run


def test_makefile_passes_the_prediction_settings_through():
    check = subprocess.run(["make", "-n", "reproduce", "CHECK=1", "HOSTS=2", "DEVICES=8", "DEVICE=tpu",
                            "COSTS=my costs.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert '--hosts 2 --devices-per-host 8 --device tpu --costs "my costs.yaml"' in check.stdout
    plain = subprocess.run(["make", "-n", "reproduce", "CHECK=1"], cwd=ROOT, capture_output=True, text=True)
    assert "--hosts" not in plain.stdout and "--costs" not in plain.stdout
