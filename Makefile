# Two commands do all set-up on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: reproduce test export sync-check pytest nbtest clean-nbs venv

venv: $(STAMP)

# Create the environment and install the project (editable, with dev extras) when missing or stale.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

JOBS ?= 2

## The main job: regenerate every table and figure into figures/ (profile cpu by default), two notebooks side by
## side; the executed experiment notebooks replace those in nbs/ as their documentation.
reproduce: $(STAMP)
	$(BIN)/cad-nb reproduce --profile $(PROFILE) --jobs $(JOBS) $(if $(filter cpu,$(PROFILE)),--save-notebooks)

## Everything CI checks.
test: $(STAMP) sync-check pytest nbtest

# Notebooks and cad_nb/ must agree: exporting must not change the library.
sync-check: $(STAMP)
	$(BIN)/nbdev-export
	@git diff --quiet --exit-code -- cad_nb || { git --no-pager diff --stat -- cad_nb; \
	  echo "cad_nb/ is out of sync with nbs/: run nbdev-export and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- cad_nb)" || { git ls-files --others --exclude-standard -- cad_nb; \
	  echo "nbdev-export created files that git does not track: add them"; exit 1; }

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

nbtest: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2

export: $(STAMP)
	$(BIN)/nbdev-export

clean-nbs: $(STAMP)
	$(BIN)/nbdev-clean
