# Two commands on a fresh clone:  `make demo` (the main job on the embedded default) and `make test` (the whole suite).
# Each creates .venv and installs the project with its dev extra when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the stamp names pyproject.toml's content: nbdev-export rewrites the file (same content) and must not trigger a reinstall
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install test demo export clean-nbs sync-check

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing ldrps-nb and its dev tools into $(VENV) (first run: several minutes; log in $(VENV)/install.log)"
	@$(PY) -m pip install -e ".[dev]" > $(VENV)/install.log 2>&1 || (tail -n 30 $(VENV)/install.log; exit 1)
	@touch $(STAMP)

test: $(STAMP)
	MPLBACKEND=Agg HF_HUB_OFFLINE=1 $(PY) -m pytest tests

demo: $(STAMP)
	MPLBACKEND=Agg HF_HUB_OFFLINE=1 $(PY) -m ldrps_nb.cli demo

export: $(STAMP)
	$(VENV)/bin/nbdev-export

clean-nbs: $(STAMP)
	$(VENV)/bin/nbdev-clean

# notebooks, modules and cleaned outputs in sync: export + clean must leave the tree unchanged
sync-check: $(STAMP)
	@$(VENV)/bin/nbdev-export && $(VENV)/bin/nbdev-clean
	@if [ -n "$$(git status --porcelain)" ]; then \
	  echo "nbdev-export / nbdev-clean changed the tree (notebooks and ldrps_nb/ out of sync):"; \
	  git status --porcelain; exit 1; fi
	@echo "notebooks and modules in sync"
