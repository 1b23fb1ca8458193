# Two entry points a new user needs: `make quickstart` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup pyright-paths quickstart test lint chromium benchmarks clean

setup: $(VENV)/.installed pyright-paths

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

quickstart: setup
	$(BIN)/diffdict run configs/quickstart.toml
	@echo "open runs/quickstart/report.html in a browser"

test: setup chromium
	$(BIN)/python -m pytest

# Formatting, lint rules and types over the whole repository (configured in pyproject.toml); each check runs and
# the target fails if any of them does. CI (.ci/run) runs it beside `make test`. `pyright -p pyproject.toml`: this
# project's settings even where a folder above the checkout holds a pyrightconfig.json (which pyright would prefer).
lint: setup
	@status=0; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/pyright -p pyproject.toml || status=1; \
	exit $$status

# pyright cannot follow pyproject.toml's package-dir mapping (diffdict.studies is the folder studies/): this builds
# the same package out of symlinks, .pyright/diffdict/, one per entry of [tool.setuptools.package-dir] plus
# diffdict/'s own files, and [tool.pyright] stubPath points there. Ignored by git; cheap, so every setup reruns it.
pyright-paths:
	@mkdir -p .pyright/diffdict
	@for file in diffdict/*.py; do ln -sfn ../../$$file .pyright/$$file; done
	@sed -n 's/^"diffdict\.\([a-z_]*\)" = "\([a-z_]*\)"$$/\1 \2/p' pyproject.toml | \
		while read name folder; do ln -sfn ../../$$folder .pyright/diffdict/$$name; done

# The report test opens report.html in headless Chromium (Debian's package; needs root or sudo).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

benchmarks: setup
	$(BIN)/python benchmarks/capture.py
	$(BIN)/python benchmarks/sae_step.py --d 1280 --n 5120 --k 10 --batch 4096
	$(BIN)/python benchmarks/sae_step.py --d 3072 --n 24576 --k 64 --batch 2048
	$(BIN)/python benchmarks/itda_encode.py --d 1280 --m 8192 --L 32 --batch 2048
	$(BIN)/python benchmarks/store_memory.py
	$(BIN)/python benchmarks/toy_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
