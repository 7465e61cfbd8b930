"""`cenas plan`: predict a run's time per phase, wall time and device-hours from per-token and per-step costs."""

from __future__ import annotations

import argparse
import json
import re

DESCRIPTION = """\
Predict one cycle's seconds per phase, the run's wall time and its device-hours, and say which phase
dominates, before running anything. The model (cenas_jax/plan/):

  generate = the prompts' tokens / prefill rate + the answers' tokens / decoding rate (at the config's
             sampling batch; each host samples its share) + cheap checks per generation over the workers
  train    = trained candidates x (compile + seeds x steps per epoch x epochs x step time), over the
             sandbox workers of every host (workers: candidates/placement.py, from --devices-per-host)
  select   = milliseconds
  update   = a fixed cost + fine-tuning epochs x the tokens of the elites' and replayed pairs (within
             search.update_token_budget) / the fine-tuning rate, over every host's devices
  once     = loading the LLM + the reference phase (the corpus trained on every dataset of the pool)
             + the warm start (nothing when a shipped or cached adapter matches its key)

Wall time = once + cycles x cycle (search.max_wall_s caps it); device-hours = hosts x devices per host
x wall time. The LLM's rates are for a model of ref_params parameters and scale linearly with the
configured model's parameter count (read from its files' headers; --model-params otherwise).

Figures: cpu's were measured on the 2-core machine this package is developed on; gpu's and tpu's are
mostly assumptions (printed as such). --costs FILE replaces any of them, per device, in YAML:

  gpu:
    decode_tok_s: 2500      # new tokens/s at `batch` rows
    finetune_tok_s: 3000
    step_s: 0.002           # seconds per proxy step of one seed at step_pixels, step_batch

Keys: prefill_tok_s, decode_tok_s, batch, decode_batch_exponent, finetune_tok_s, update_overhead_s,
ref_params, llm_load_s, step_s, step_pixels, step_batch, compile_s, check_s, pool_efficiency.

--from-run RUN_DIR fits the figures of the run's device and the workload (tokens per answer, resampled
and trained shares) to a finished run's store, prints the run's measured seconds per phase beside the
built-in and the calibrated predictions, then predicts CONFIG (the run's own config without one) with
them. Exit codes: 0, 2 a bad config, device, costs file or run directory.

Examples:
  cenas plan experiments/configs/quickstart.yaml
  cenas plan experiments/configs/fig1_convergence.yaml --device gpu --hosts 2 --devices-per-host 8 \\
      --set llm.model.name=/models/qwen2.5-coder-7b
  cenas plan experiments/configs/quickstart.yaml --from-run runs/quickstart --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="predict a run's time per phase, wall time and device-hours, and what dominates",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="the run's YAML config (optional with --from-run: then the run's own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, as for `cenas run` (repeatable)")
    p.add_argument("--hosts", type=_positive_int, default=1, help="hosts running the search (default: 1)")
    p.add_argument("--devices-per-host", type=_positive_int, default=None, metavar="D",
                   help="GPUs or TPU chips per host; cores with --device cpu (default: this machine's count for the "
                        "device kind, 1 where it has none; with --from-run and no CONFIG: the run's)")
    p.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None,
                   help="the device kind whose figures apply (default: cpu; with --from-run: the run's)")
    p.add_argument("--costs", metavar="FILE", help="YAML of figures per device replacing the built-in ones (see above)")
    p.add_argument("--from-run", metavar="RUN_DIR", help="calibrate the figures and the workload on a finished run")
    p.add_argument("--model-params", type=_count, metavar="N",
                   help="the LLM's parameter count (e.g. 7B, 135M, 6.7e9) when its files cannot be read here")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.set_defaults(func=cmd_plan)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _count(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbB]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a parameter count such as 7B, 135M or 6.7e9, got {text!r}")
    n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a parameter count >= 1, got {text!r}")
    return n


def _this_host(device: str) -> int:
    """Devices of kind ``device`` on this machine (cores for cpu); 1 where it has none."""
    from cenas_jax.candidates.placement import detect_inventory

    inv = detect_inventory()
    if device == "cpu":
        return inv.cores
    return len(inv.devices) if inv.platform == device and inv.devices else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from cenas_jax.config import load_config
    from cenas_jax.errors import UserError
    from cenas_jax.plan import default_costs, format_prediction, load_costs, predict
    from cenas_jax.plan.calibrate import calibrate, format_calibration, measure_run
    from cenas_jax.plan.inputs import model_params

    if args.config is None and args.from_run is None:
        raise UserError("cenas plan needs a CONFIG, or --from-run RUN_DIR to predict that run's own config")
    files = load_costs(args.costs) if args.costs else {}
    measured = measure_run(args.from_run) if args.from_run else None
    if args.config is not None:
        cfg, label = load_config(args.config, args.overrides), args.config
    else:
        cfg, label = measured.cfg, f"{args.from_run} (its config)"
        if args.overrides:
            from cenas_jax.config import RunConfig, apply_overrides, from_dict, to_dict

            cfg = from_dict(RunConfig, apply_overrides(to_dict(cfg), args.overrides))
    device = args.device or (measured.device if measured else "cpu")
    costs = files.get(device) or default_costs(device)
    workload = None
    cal = None
    notes = []
    if measured is not None:
        base = files.get(measured.device) or default_costs(measured.device)
        run_params = None
        if measured.cfg.search.generator == "llm":
            try:
                run_params = model_params(measured.cfg.llm.model.name)
            except UserError as e:
                if args.model_params is None:
                    raise UserError(f"{args.from_run}: {e} (give the run's LLM size with --model-params, e.g. 7B)") \
                        from None
                run_params = args.model_params
        cal = calibrate(measured, base, model_params=run_params)
        workload = cal.workload
        if device == measured.device:
            costs = cal.costs
        else:
            notes.append(f"the figures calibrated on {args.from_run} are {measured.device}'s; {device}'s are not "
                         "calibrated (the workload is)")
    if args.devices_per_host is not None:
        devices = args.devices_per_host
    elif measured is not None and args.config is None and device == measured.device:
        devices = measured.devices_per_host
    else:
        devices = _this_host(device)
    params = args.model_params
    if params is None and cfg.search.generator == "llm":
        try:
            params = model_params(cfg.llm.model.name)
        except UserError as e:
            raise UserError(f"{e} (or give the LLM's size with --model-params, e.g. 7B)") from None
    pred = predict(cfg, costs, args.hosts, devices, workload=workload, model_params=params, label=label)
    if args.json:
        out = pred.to_dict()
        if cal is not None:
            out["calibration"] = cal.to_dict()
        out["notes"] = notes
        print(json.dumps(out, indent=1))
        return 0
    if cal is not None:
        print(format_calibration(cal))
        print()
    print(format_prediction(pred))
    for n in notes:
        print(f"note: {n}")
    return 0
