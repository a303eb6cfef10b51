# deco: the commands a person types. `make help` lists them.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install install-lmms train zoo test test-full lint format bench bench-gpu figure clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first: the CPU wheel on local disk. A bare `torch` resolved later would pull a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev,app]'
	$(MAKE) install-lmms
	touch $@

install: $(VENV)/.installed ## Create .venv and install deco (torch 2.13 CPU first, then deco[dev,app], lmms-eval)

# lmms-eval without its pins (wandb==0.25, newest torchvision -> newest torch), plus what its CLI imports.
LMMS_DEPS := loguru sacrebleu evaluate datasets tenacity pytablewriter
install-lmms: ## Install lmms-eval for the deco adapter without changing torch / wandb
	$(VENV)/bin/pip install -q $(LMMS_DEPS)
	$(VENV)/bin/pip install -q --no-deps 'lmms-eval==0.7.3'

train: install ## Finetune the embedded tiny zoo on the shapes world (~10 min on 2 cores) (extra overrides: make train ARGS="projector=qformer")
	$(PY) -m deco.train $(ARGS)

zoo: install ## Regenerate the pretrained tiny zoo in deco/zoo/tiny/ on CPU (~1 h on 2 cores; ARGS="smoke=true" for a check)
	$(PY) -m deco.zoo $(ARGS)

test: install ## Run the default test suite (not slow)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-full: install ## Run every test, slow ones included
	$(PY) -m pytest -q $(ARGS)

# Python files this branch changed against main (all of them on main itself: none).
CHANGED_PY = $(shell git diff --name-only --diff-filter=AM $$(git merge-base HEAD main 2>/dev/null || echo HEAD) -- '*.py' 2>/dev/null)

lint: install ## ruff check (pyproject.toml) on everything, ruff format --check on the files this branch changed
	$(VENV)/bin/ruff check .
	$(if $(strip $(CHANGED_PY)),$(VENV)/bin/ruff format --check $(CHANGED_PY),@echo "ruff format: no changed Python files")

format: install ## ruff format the Python files this branch changed
	$(if $(strip $(CHANGED_PY)),$(VENV)/bin/ruff format $(CHANGED_PY),@echo "ruff format: no changed Python files")

bench: install ## Run the performance benchmarks (prints ratios and goals, writes experiments/perf/results.json)
	$(PY) -m experiments.perf.run $(ARGS)

bench-gpu: install ## On a CUDA machine: LLaVA-1.5-7B-sized steps, trainer=gpu/fsdp, generation (experiments/perf/gpu.py)
	$(PY) -m experiments.perf.gpu $(ARGS)

figure: install ## Remake the README's comparison figure (docs/img/comparison.png; STUDY=multirun/zoo_study reuses the study's checkpoints)
	PY=$(PY) bash experiments/readme_figure/make.sh

# Folders the documented commands write into the repository root (out_dir=exported, out_dir=hf, ...); also in .gitignore.
DOC_OUTPUTS := exported hf shards merged

clean: ## Remove run outputs, documented export / shard folders and caches (keeps .venv)
	rm -rf outputs multirun wandb lightning_logs .pytest_cache $(DOC_OUTPUTS)
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
