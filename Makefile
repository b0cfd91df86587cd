# Two commands do all set-up on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: reproduce real-data test export sync-check lint pytest nbtest clean-nbs venv docs

venv: $(STAMP)

# Create the environment and install the project (editable, with dev extras) when missing or stale.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

JOBS ?= 2
REAL_DATA ?= .cache/real
SHARED ?= ../shared/datasets

## The real datasets of notebooks 22 and 32, prepared into REAL_DATA by `cad-nb data get`: from local copies under
## SHARED when they are there, else from their public sources (network).
real-data: $(STAMP)
	$(BIN)/cad-nb data get mtd --out $(REAL_DATA) $(if $(wildcard $(SHARED)/magnetic_tile),--from $(SHARED)/magnetic_tile)
	$(BIN)/cad-nb data get car_damage --out $(REAL_DATA) $(if $(wildcard $(SHARED)/car_damage),--from $(SHARED)/car_damage)
	$(BIN)/cad-nb data get dtd --out $(REAL_DATA) $(if $(wildcard $(SHARED)/dtd_subset),--from $(SHARED)/dtd_subset)

## The main job: regenerate every table and figure into figures/ (profile cpu by default), two notebooks side by
## side; the executed experiment notebooks replace those in nbs/ as their documentation. The real-data notebooks
## run when REAL_DATA holds what `make real-data` prepares, and are skipped (one line each) otherwise.
reproduce: $(STAMP)
	$(BIN)/cad-nb reproduce --profile $(PROFILE) --jobs $(JOBS) $(if $(filter cpu,$(PROFILE)),--save-notebooks) \
	  $(if $(wildcard $(REAL_DATA)),--real-data $(REAL_DATA))

## Everything CI checks.
test: $(STAMP) sync-check lint pytest nbtest

# The style gate (pyproject.toml, [tool.ruff]): line length, no `;` chains, complexity; library and notebooks.
lint: $(STAMP)
	$(BIN)/ruff check cad_nb nbs

# Notebooks and cad_nb/ must agree: exporting must not change the library.
sync-check: $(STAMP)
	$(BIN)/nbdev-export
	@git diff --quiet --exit-code -- cad_nb || { git --no-pager diff --stat -- cad_nb; \
	  echo "cad_nb/ is out of sync with nbs/: run nbdev-export and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- cad_nb)" || { git ls-files --others --exclude-standard -- cad_nb; \
	  echo "nbdev-export created files that git does not track: add them"; exit 1; }

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 tests

nbtest: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2

## The documentation site, into _site/ (mkdocs.yml, docs/hooks.py): README, every notebook with its committed outputs
## (not executed), the API of each module; open _site/index.html, or `$(BIN)/mkdocs serve` to browse as you edit.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

export: $(STAMP)
	$(BIN)/nbdev-export

clean-nbs: $(STAMP)
	$(BIN)/nbdev-clean
