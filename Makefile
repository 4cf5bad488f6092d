# advkit: two commands do everything on a fresh machine.
#   make labs   - execute every lab with its default parameters -> build/labs/*.ipynb, build/summary.md
#   make test   - unit tests + every lab under nbval (lax)
# Both create the virtual environment (.venv) and install advkit into it when needed.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

# Where data is found (ADVKIT_DATA). Default: ../shared/data when it is beside the checkout
# (the course's offline staging), else ./data. Writes go to ADVKIT_CACHE (./data/cache).
ADVKIT_DATA  ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)
ADVKIT_CACHE ?= $(CURDIR)/data/cache
export ADVKIT_DATA ADVKIT_CACHE

.PHONY: labs test env clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

env: $(VENV)/.installed

labs: $(VENV)/.installed
	$(VENV)/bin/advkit labs run $(LABS) $(if $(PROFILE),--profile $(PROFILE))

test: $(VENV)/.installed
	ADVKIT_RECORDS=$(CURDIR)/build/test-records $(PY) -m pytest $(wildcard labs/*.ipynb) tests --nbval-lax -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf build
