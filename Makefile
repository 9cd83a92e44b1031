# `make run`: set up and process the bundled example.  `make test`: set up and pass the tests.
# Both are idempotent: setup reinstalls only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.trax-installed
CORES ?= 2

.PHONY: setup run test lint lock clean

setup: $(STAMP)

# TORCH_INDEX: optional wheel index for torch (e.g. https://download.pytorch.org/whl/cpu for the
# small CPU build, or a CUDA index); empty = whatever pip finds for torch==2.13.0.
TORCH_INDEX ?=

$(STAMP): pyproject.toml requirements/no-deps.txt requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch==2.13.0 --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]' -c requirements/constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/no-deps.txt -c requirements/constraints.txt
	$(BIN)/python -m trax.diarization.setup
	$(BIN)/python -m trax.asr.quantized
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/example.yaml
	@echo "Results: results/<id>/ (transcripts, diarization, merged.json, subtitles, enhanced text); speakers: results/speakers.tsv; summary: results/summary.tsv; report: $(BIN)/snakemake --report results/report.html"

test: setup
	$(BIN)/python -m pytest -q

# Re-pin every transitive dependency to what the venv holds (after a pyproject.toml change:
# `rm -rf .venv && make lock` resolves afresh without the old pins).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/no-deps.txt
	{ sed -n '/^#/p' requirements/constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > requirements/constraints.tmp
	mv requirements/constraints.tmp requirements/constraints.txt

lint: setup
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs benchmarks .snakemake
