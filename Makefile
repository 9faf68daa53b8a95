# Quick start: `make demo` and `make test` (both create .venv on first use).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (found locally on our machines). GPU users: make TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://..."
TORCH_SPEC ?= torch==2.13.0
# the torchvision release of that torch, pinned with it: timm (a test dependency) needs torchvision, and
# an unpinned one would upgrade torch (and pull CUDA wheels) to match the newest torchvision
TORCHVISION_SPEC ?= torchvision==0.28.0
TORCH_INDEX ?=
PYTEST_ARGS ?= -n 2
# the real images beside the repository (patch-demo, generated slides' tissue texture), when present
export MONAI_SHF_DATA ?= $(wildcard $(abspath ../shared/data))

.PHONY: venv lint format test wheel-check demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would make pip resolve several GB of CUDA wheels
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

# the built wheel in a fresh venv outside the checkout: bundle list, make-slide, segment-slide, a bundle run
wheel-check: venv
	PYTHON=$(BIN)/python TORCH_SPEC="$(TORCH_SPEC)" bash .ci/wheel_check

demo: venv
	$(BIN)/monai-shf demo --output-dir outputs/demo

bench: venv
	$(BIN)/python benchmarks/patching.py
	$(BIN)/python benchmarks/fidelity.py
	$(BIN)/python benchmarks/training.py

clean:
	rm -rf $(VENV) outputs .pytest_cache *.egg-info
