# make run   - set up .venv if needed, then train the default config in the foreground
# make test  - set up .venv if needed, then ruff + pytest (everything, as CI runs it)
# make test-fast - the inner loop: pytest without the tests marked slow (< 30 s)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# two pytest workers (pytest-xdist), a test file per worker: most tests train on one thread, so
# the second core would idle; PARALLEL= runs them one after another
PARALLEL ?= -n 2 --dist loadfile

.PHONY: run test test-fast lint install clean bench bench-recipe

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch 2.13.0 first, when none is installed (the CPU wheel on this project's machines);
	@# a bare `torch` requirement would pull the newest multi-GB CUDA build
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "torch==2.13.0" || $(BIN)/python -m pip install --quiet "torch>=2.4"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/llm-trainer train --foreground $(ARGS)
	@echo "llm-trainer is installed in $(VENV): 'source $(VENV)/bin/activate' makes it a command in your shell"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PARALLEL) --durations=15

test-fast: $(STAMP)
	$(BIN)/pytest -q $(PARALLEL) -m "not slow" --durations=10

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_shakespeare.py $(ARGS)

bench-recipe: $(STAMP)
	$(BIN)/python benchmarks/bench_recipe.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
