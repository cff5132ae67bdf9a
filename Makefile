# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo

.PHONY: install demo test fixtures benchmark report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Score the bundled fixtures: a mildly blurred prediction set against the references.
demo: install
	$(BIN)/foresight-eval score fixtures/preds/blur_mild fixtures/refs --context 4 --out $(RUN_DIR)

test: install
	$(BIN)/python -m pytest -q

## Regenerate fixtures/ from fixtures/generate.py (deterministic).
fixtures: install
	$(BIN)/python fixtures/generate.py

benchmark: install
	$(BIN)/python benchmarks/score_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
