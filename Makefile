# `make run`: set up and process the bundled example.  `make test`: set up and pass the tests.
# Both are idempotent: setup reinstalls only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.trax-installed
CORES ?= 2

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)
	@echo "Transcripts: results/*/transcript.fast.json"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs benchmarks .snakemake
