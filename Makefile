# Two entry points a new user needs: `make quickstart` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test chromium benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

quickstart: setup
	$(BIN)/diffdict hooks tiny/sdxl
	$(BIN)/diffdict generate tiny/sdxl "a large red circle on the left" "a small blue square on the right" \
		--hooks down.2.1,mid.0,up.0.0,up.0.1 --out runs/quickstart

test: setup chromium
	$(BIN)/python -m pytest

# The report test opens report.html in headless Chromium (Debian's package; needs root or sudo).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

benchmarks: setup
	$(BIN)/python benchmarks/capture.py

clean:
	rm -rf $(VENV) runs .pytest_cache
