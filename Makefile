# captum_vit — the two commands of the README:
#   make demo   creates .venv if missing, installs, explains images, writes a PNG
#   make test   creates .venv if missing, installs, runs the whole suite
#               (unit tests, executed tutorial notebooks, sphinx docs build)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.captum_vit-installed

.PHONY: install browser demo test lint docs clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/captum-vit explain --model synthetic_vit --out out/demo

# The visualiser's browser test drives Debian's headless Chromium (never a
# browser downloaded by a test tool); install it when missing (needs root).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "install Debian's chromium and chromium-driver (the browser test needs them)"; \
			exit 1; \
		fi; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check captum_vit tests benchmarks

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf docs/_build out .pytest_cache
