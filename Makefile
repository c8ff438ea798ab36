# Fresh machine: `make demo` (set up + main job) or `make test` (set up + every test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: setup setup-demo demo test test-fast test-latest lock lint docs clean

# What each environment was built from: rebuilt when the lock or the set-up script changes.
$(VENV)/.ivkit-demo: requirements/demo.lock.txt scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) PROFILE=demo sh scripts/setup_env.sh
	touch $@

$(VENV)/.ivkit-dev: requirements/dev.lock.txt scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) PROFILE=dev sh scripts/setup_env.sh
	touch $@ $(VENV)/.ivkit-demo

setup-demo: $(VENV)/.ivkit-demo
setup: $(VENV)/.ivkit-dev

demo: $(VENV)/.ivkit-demo
	$(VENV)/bin/ivkit demo --out runs/demo

test: $(VENV)/.ivkit-dev
	$(PY) -m pytest --durations=15

test-fast: $(VENV)/.ivkit-dev
	$(PY) -m pytest -m "not slow"

# Drift check (not in CI): a second environment with the newest releases the ranges allow,
# running the unit tests, so that a breaking release is seen the day it ships.
test-latest:
	rm -rf .venv-latest
	PYTHON=$(PYTHON) VENV=.venv-latest PROFILE=latest sh scripts/setup_env.sh
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -m "not slow" -p no:cacheprovider

# Re-resolve requirements/*.lock.txt from pyproject's ranges (after changing a range, or to move on).
lock:
	sh scripts/lock.sh

# The documentation site (mkdocs-material, the API reference from the docstrings, the notebooks);
# --strict: a broken link or a missing reference fails. The home page is the README.
docs: $(VENV)/.ivkit-dev
	sed 's#](docs/#](#g' README.md > docs/index.md
	$(PY) -c "import pathlib, shutil, plotly; pathlib.Path('docs/assets').mkdir(exist_ok=True); shutil.copy(pathlib.Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', 'docs/assets/plotly.min.js')"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

lint: $(VENV)/.ivkit-dev
	$(VENV)/bin/ruff check ivkit tests scripts

clean:
	rm -rf $(VENV) .venv-latest .venv-tools runs .pytest_cache site docs/index.md
