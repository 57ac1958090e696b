# captum_vit — the two commands of the README:
#   make demo   creates .venv if missing, installs the package with the `demo`
#               extra only, explains images, writes a PNG
#   make test   creates .venv if missing, installs the `dev` extra, type-checks
#               the package (mypy), runs the whole suite (unit tests, executed tutorial notebooks, the wheel
#               as users get it, sphinx docs build)
# Other targets: notebooks (re-execute the tutorials, outputs committed),
# gallery (every registered method on held-out benchmark images, committed
# under docs/_static/gallery), docs, lint, typecheck.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.captum_vit-demo-installed
DEV_STAMP := $(VENV)/.captum_vit-dev-installed

.PHONY: install install-demo browser demo test lint typecheck docs notebooks gallery clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEMO_STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $(DEMO_STAMP)

$(DEV_STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(DEV_STAMP) $(DEMO_STAMP)

install-demo: $(DEMO_STAMP)

install: $(DEV_STAMP)

demo: $(DEMO_STAMP)
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

test: $(DEV_STAMP) browser
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check captum_vit tests benchmarks

# Also the first step of `make test`.
typecheck: $(DEV_STAMP)
	$(PY) -m mypy

docs: $(DEV_STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Re-execute every tutorial in place (a fresh kernel each, tests/notebooks.py)
# so that the committed notebooks carry the outputs of their current code;
# commit the result (the suite fails on outputs older than the code).
notebooks: $(DEV_STAMP)
	$(PY) -m tests.notebooks tutorials/*.ipynb

# The gallery of docs/gallery.rst and the README: every registered method
# (columns) on six held-out images of the bundled benchmark (rows); commit the
# result (tests/test_gallery.py re-runs this command on a subset and compares).
gallery: $(DEMO_STAMP)
	$(VENV)/bin/captum-vit explain --methods all --samples 6 --cell 1.0 --out docs/_static/gallery

clean:
	rm -rf docs/_build out .pytest_cache .mypy_cache
