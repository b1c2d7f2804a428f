# Two commands do everything on a fresh machine:
#   make demo   the main job on the embedded default model (daemon + completion, explanation, refactor)
#   make test   lint, type-check and the whole test suite (including one slow test on the real model)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-small install-server demo test lint typecheck pytest vscode bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.3
	@echo "installing banked and its pinned dependencies (llama-cpp-python builds from source: ~8 min the first time)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# llama.cpp's llama-server, built once from the llama.cpp that the pinned llama-cpp-python sdist vendors (about
# 15 min on 2 cores; kept in ~/.cache/banked-build, as pip keeps built wheels): the remote engine's tests and
# `banked team-server` run it.
$(VENV)/.llama-server: $(STAMP) daemon/engines/llama_server.py
	$(BIN)/python -m banked.daemon.engines.llama_server
	touch $@

install-server: $(VENV)/.llama-server

# The faster, weaker completion model (model = "qwen2.5-coder-0.5b" in config.toml).
install-small: install
	$(BIN)/pip install --quiet -e '.[test,small]'

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

pytest: install install-server
	$(BIN)/pytest -q -rs

# The VS Code extension: tsc (strict), node's test runner on its logic, an esbuild bundle, a .vsix built with
# vsce, and a check of what the .vsix ships.
vscode:
	cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error && npm run --silent compile && npm test --silent
	mkdir -p build
	cd editors/vscode && npx vsce package --no-dependencies --allow-missing-repository --out ../../build/banked.vsix
	node editors/vscode/check-vsix.mjs build/banked.vsix

test: lint typecheck pytest vscode

bench: install
	$(BIN)/python bench/warm.py
	$(BIN)/python bench/lsp.py

clean:
	rm -rf $(VENV) build
