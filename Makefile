# jaxdiff: every target that needs Python depends on `install`, which builds .venv from the lock.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.jaxdiff-installed
SWEEP  ?= mappo_mpe_lr
ARGS   ?=

.PHONY: install train test test-slow sweep bench lint clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The embedded default: MAPPO on MPE simple_spread, 3 seeds, about 3 minutes on a 2-core CPU.
train: install
	$(VENV)/bin/jaxdiff train $(ARGS)

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" $(ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(ARGS)

sweep: install
	$(VENV)/bin/jaxdiff sweep sweep=$(SWEEP) $(ARGS)

bench: install
	$(VENV)/bin/jaxdiff bench $(ARGS)

# ruff (pyflakes-level checks) and the import contracts of the design's dependency rule
# (pyproject.toml [tool.importlinter]); both tools are pinned in requirements.lock.
lint: install
	$(VENV)/bin/ruff check jaxdiff tests experiments
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
