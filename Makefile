# Two commands do everything on a fresh machine:
#   make demo   the main job on the embedded default model (daemon + completion, explanation, refactor)
#   make test   lint, type-check and the whole test suite (including one slow test on the real model)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.3
	@echo "installing banked and its pinned dependencies (llama-cpp-python builds from source: ~8 min the first time)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/banked demo

lint: install
	$(BIN)/ruff check daemon lsp tests bench
	$(BIN)/ruff format --check daemon lsp tests bench

# mypy resolves banked.daemon -> daemon/ through a small link tree (the editable install uses an import hook).
typecheck: install
	mkdir -p build/typecheck/banked
	ln -sfn ../../../daemon build/typecheck/banked/daemon
	ln -sfn ../../../lsp build/typecheck/banked/lsp
	MYPYPATH=build/typecheck $(BIN)/mypy -p banked.daemon -p banked.lsp

pytest: install
	$(BIN)/pytest -q -rs

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/warm.py

clean:
	rm -rf $(VENV) build
