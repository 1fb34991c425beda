# The two commands a fresh machine needs (README "Set-up"):
#   make demo   - the main job: the review app on the bundled sample slide and model
#                 (without a display: the headless equivalent, which writes results and says how to open them)
#   make test   - lint, layering contracts, manifest validation and the whole test suite (GUI tests under Xvfb)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench setup clean

setup:
	bash scripts/bootstrap.sh

demo: setup
	$(BIN)/napari-sgnet demo

lint: setup
	$(BIN)/ruff check napari_sgnet tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python scripts/mypy_ratchet.py
	$(BIN)/npe2 validate napari-sgnet

test: lint
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
